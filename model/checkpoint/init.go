package checkpoint

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// InitStd is the standard deviation of the normal initialisation of every
// linear and embedding weight (Hugging Face initializer_range).
const InitStd = 0.02

// Byte-level tokenizer ids written by Init: ids 0-255 are the bytes (in
// GPT-2 vocabulary order), then the three special tokens.
const (
	ByteBOSID       = 256
	ByteEOSID       = 257
	BytePadID       = 258
	ByteVocabSize   = 259
	byteBOS         = "<s>"
	byteEOS         = "</s>"
	bytePad         = "<pad>"
	initMaxPosition = 2048
)

var presets = map[string]Config{
	// tiny: about 260K parameters, grouped-query attention like stories260K.
	"tiny": {
		Architecture: ArchLlama, ModelType: "llama",
		VocabSize: ByteVocabSize, HiddenSize: 64, IntermediateSize: 172, NumLayers: 5,
		NumHeads: 8, NumKVHeads: 4, HeadDim: 8, MaxPositionEmbeddings: initMaxPosition,
		RMSNormEps: 1e-5, RopeTheta: DefaultRopeTheta,
		BOSTokenID: ByteBOSID, EOSTokenIDs: []int{ByteEOSID}, TorchDtype: "float32",
	},
	// k256: every matrix's rows are whole 256-wide super-blocks (hidden
	// 256, intermediate 768), so llama.cpp's K-quants (Q4_K, Q6_K) take
	// every matrix; 1.7M parameters in 2 layers, grouped-query attention.
	"k256": {
		Architecture: ArchLlama, ModelType: "llama",
		VocabSize: ByteVocabSize, HiddenSize: 256, IntermediateSize: 768, NumLayers: 2,
		NumHeads: 4, NumKVHeads: 2, HeadDim: 64, MaxPositionEmbeddings: initMaxPosition,
		RMSNormEps: 1e-5, RopeTheta: DefaultRopeTheta,
		BOSTokenID: ByteBOSID, EOSTokenIDs: []int{ByteEOSID}, TorchDtype: "float32",
	},
	// 15m: the llama2.c stories15M shape (tied embeddings, 15.2M parameters).
	"15m": {
		Architecture: ArchLlama, ModelType: "llama",
		VocabSize: 32000, HiddenSize: 288, IntermediateSize: 768, NumLayers: 6,
		NumHeads: 6, NumKVHeads: 6, HeadDim: 48, MaxPositionEmbeddings: initMaxPosition,
		RMSNormEps: 1e-5, RopeTheta: DefaultRopeTheta, TieWordEmbeddings: true,
		BOSTokenID: ByteBOSID, EOSTokenIDs: []int{ByteEOSID}, TorchDtype: "float32",
	},
}

// Presets lists the preset names Init accepts, sorted.
func Presets() []string {
	names := make([]string, 0, len(presets))
	for n := range presets {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// PresetConfig returns the config of a named preset.
func PresetConfig(preset string) (Config, error) {
	c, ok := presets[preset]
	if !ok {
		return Config{}, fmt.Errorf("%w: %q (want one of %s)", ErrUnknownPreset, preset, strings.Join(Presets(), ", "))
	}
	c.EOSTokenIDs = append([]int{}, c.EOSTokenIDs...)
	return c, nil
}

// InitTensors returns randomly initialised weights for c the way Hugging
// Face initialises a Llama: linear and embedding weights normal with
// standard deviation InitStd, biases zero, RMSNorm weights one. The same
// seed gives the same weights. c is validated first.
func InitTensors(c Config, seed int64) (map[string]*Tensor, error) {
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("init tensors: %w", err)
	}
	exp := ExpectedTensors(c)
	names := make([]string, 0, len(exp))
	for n := range exp {
		names = append(names, n)
	}
	sort.Strings(names)
	rng := rand.New(rand.NewPCG(uint64(seed), 0x9e3779b97f4a7c15))
	out := make(map[string]*Tensor, len(names))
	for _, n := range names {
		shape := exp[n]
		t := &Tensor{Shape: append([]int{}, shape...)}
		t.Data = make([]float32, t.NumElements())
		switch {
		case strings.HasSuffix(n, "norm.weight"):
			for i := range t.Data {
				t.Data[i] = 1
			}
		case strings.HasSuffix(n, ".bias"):
			// zero
		default:
			for i := range t.Data {
				t.Data[i] = float32(rng.NormFloat64() * InitStd)
			}
		}
		out[n] = t
	}
	return out, nil
}

// Init writes a randomly initialised Llama of a named preset ("tiny",
// "15m") into outDir in the Hugging Face layout: config.json,
// generation_config.json, model.safetensors, and a byte-level tokenizer
// (tokenizer.json, tokenizer_config.json, special_tokens_map.json).
func Init(preset string, seed int64, outDir string) error {
	cfg, err := PresetConfig(preset)
	if err != nil {
		return fmt.Errorf("init %s: %w", outDir, err)
	}
	tensors, err := InitTensors(cfg, seed)
	if err != nil {
		return fmt.Errorf("init %s: %w", preset, err)
	}
	sharpen(preset, tensors, seed)
	ck := &Checkpoint{
		Config:     cfg,
		Generation: GenerationConfig{BOSTokenID: cfg.BOSTokenID, EOSTokenIDs: cfg.EOSTokenIDs, MaxLength: cfg.MaxPositionEmbeddings},
		Tensors:    tensors,
	}
	pad := BytePadID
	ck.Generation.PadTokenID = &pad
	if err := Save(outDir, ck); err != nil {
		return fmt.Errorf("init %s: %w", preset, err)
	}
	return writeByteTokenizer(outDir, cfg.MaxPositionEmbeddings)
}

// byteLevelAlphabet returns GPT-2's byte-to-unicode map in GPT-2 vocabulary
// order: first the printable bytes that stand for themselves ('!'..'~',
// '¡'..'¬', '®'..'ÿ'), then the others, which stand for U+0100 onward.
func byteLevelAlphabet() []string {
	var printable [256]bool
	for _, r := range [][2]int{{'!', '~'}, {'¡', '¬'}, {'®', 'ÿ'}} {
		for b := r[0]; b <= r[1]; b++ {
			printable[b] = true
		}
	}
	out := make([]string, 0, 256)
	for b := 0; b < 256; b++ {
		if printable[b] {
			out = append(out, string(rune(b)))
		}
	}
	n := 0
	for b := 0; b < 256; b++ {
		if !printable[b] {
			out = append(out, string(rune(256+n)))
			n++
		}
	}
	return out
}

// ByteLevelTokenizerJSON returns a minimal Hugging Face tokenizer.json: a
// BPE model whose vocabulary is GPT-2's 256 byte symbols in GPT-2 order
// (ids 0-255) with no merges, <s>, </s> and <pad> as special added tokens
// (ids 256-258), ByteLevel pre-tokenizer and decoder, and a post-processor
// that prepends <s>. It is the layout model/tokenizer's ByteLevelJSON writes.
func ByteLevelTokenizerJSON() map[string]any {
	vocab := orderedVocab(byteLevelAlphabet())
	added := []addedToken{
		{ID: ByteBOSID, Content: byteBOS, Special: true},
		{ID: ByteEOSID, Content: byteEOS, Special: true},
		{ID: BytePadID, Content: bytePad, Special: true},
	}
	bos := func(typeID int) map[string]any {
		return map[string]any{"SpecialToken": map[string]any{"id": byteBOS, "type_id": typeID}}
	}
	seq := func(id string, typeID int) map[string]any {
		return map[string]any{"Sequence": map[string]any{"id": id, "type_id": typeID}}
	}
	byteLevel := map[string]any{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}
	return map[string]any{
		"version":       "1.0",
		"truncation":    nil,
		"padding":       nil,
		"added_tokens":  added,
		"normalizer":    nil,
		"pre_tokenizer": byteLevel,
		"post_processor": map[string]any{
			"type":   "TemplateProcessing",
			"single": []any{bos(0), seq("A", 0)},
			"pair":   []any{bos(0), seq("A", 0), bos(1), seq("B", 1)},
			"special_tokens": map[string]any{
				byteBOS: map[string]any{"id": byteBOS, "ids": []int{ByteBOSID}, "tokens": []string{byteBOS}},
			},
		},
		"decoder": map[string]any{"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
		"model": map[string]any{
			"type":                      "BPE",
			"dropout":                   nil,
			"unk_token":                 nil,
			"continuing_subword_prefix": nil,
			"end_of_word_suffix":        nil,
			"fuse_unk":                  false,
			"byte_fallback":             false,
			"ignore_merges":             false,
			"vocab":                     vocab,
			"merges":                    []string{},
		},
	}
}

func writeByteTokenizer(dir string, maxLen int) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("write tokenizer: %w", err)
	}
	if err := writeJSONAtomic(filepath.Join(dir, TokenizerFile), ByteLevelTokenizerJSON()); err != nil {
		return err
	}
	tc := map[string]any{
		"add_bos_token":                true,
		"add_eos_token":                false,
		"bos_token":                    byteBOS,
		"eos_token":                    byteEOS,
		"pad_token":                    bytePad,
		"unk_token":                    nil,
		"clean_up_tokenization_spaces": false,
		"model_max_length":             maxLen,
		"tokenizer_class":              "PreTrainedTokenizerFast",
	}
	if err := writeJSONAtomic(filepath.Join(dir, TokenizerConfigFile), tc); err != nil {
		return err
	}
	return writeJSONAtomic(filepath.Join(dir, SpecialTokensMapFile), map[string]any{
		"bos_token": byteBOS, "eos_token": byteEOS, "pad_token": bytePad,
	})
}
