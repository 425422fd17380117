package tokenizer

import (
	"encoding/json"
	"fmt"
)

// ByteLevelJSON returns a minimal byte-level BPE tokenizer.json: the 256 byte
// tokens in GPT-2 byte-to-unicode order (ids 0-255), no merges, then the
// special tokens <s> (BOS, added by Encode with addSpecial), </s> (EOS) and
// <pad>, then extraSpecial in order. Load and Parse read it back; every text
// round-trips through it. `model init` writes it for a fresh model.
func ByteLevelJSON(extraSpecial []string) ([]byte, error) {
	vocab := make(map[string]int, 256)
	for id, b := range byteLevelAlphabet {
		vocab[byteToStr[b]] = id
	}
	type added struct {
		ID         int    `json:"id"`
		Content    string `json:"content"`
		SingleWord bool   `json:"single_word"`
		LStrip     bool   `json:"lstrip"`
		RStrip     bool   `json:"rstrip"`
		Normalized bool   `json:"normalized"`
		Special    bool   `json:"special"`
	}
	specials := append([]string{"<s>", "</s>", "<pad>"}, extraSpecial...)
	addedTokens := make([]added, 0, len(specials))
	seen := map[string]bool{}
	for _, s := range specials {
		if s == "" {
			return nil, fmt.Errorf("%w: empty special token", ErrInvalid)
		}
		if seen[s] {
			return nil, fmt.Errorf("%w: special token %q listed twice", ErrInvalid, s)
		}
		seen[s] = true
		addedTokens = append(addedTokens, added{ID: 256 + len(addedTokens), Content: s, Special: true})
	}
	byteLevel := map[string]any{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}
	doc := map[string]any{
		"version":       "1.0",
		"truncation":    nil,
		"padding":       nil,
		"added_tokens":  addedTokens,
		"normalizer":    nil,
		"pre_tokenizer": byteLevel,
		"post_processor": map[string]any{
			"type":   "TemplateProcessing",
			"single": []any{map[string]any{"SpecialToken": map[string]any{"id": "<s>", "type_id": 0}}, map[string]any{"Sequence": map[string]any{"id": "A", "type_id": 0}}},
			"pair": []any{
				map[string]any{"SpecialToken": map[string]any{"id": "<s>", "type_id": 0}}, map[string]any{"Sequence": map[string]any{"id": "A", "type_id": 0}},
				map[string]any{"SpecialToken": map[string]any{"id": "<s>", "type_id": 1}}, map[string]any{"Sequence": map[string]any{"id": "B", "type_id": 1}},
			},
			"special_tokens": map[string]any{"<s>": map[string]any{"id": "<s>", "ids": []int{256}, "tokens": []string{"<s>"}}},
		},
		"decoder": map[string]any{"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
		"model": map[string]any{
			"type": "BPE", "dropout": nil, "unk_token": nil, "continuing_subword_prefix": nil,
			"end_of_word_suffix": nil, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
			"vocab": vocab, "merges": []string{},
		},
	}
	return json.MarshalIndent(doc, "", "  ")
}
