package checkpoint

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
)

// SentencePiece token types as stored in tokenizer.ggml.token_type.
const (
	spmNormal      = 1
	spmUnknown     = 2
	spmControl     = 3
	spmUserDefined = 4
	spmUnused      = 5
	spmByte        = 6
)

func metaUint(m map[string]any, key string) (int, bool, error) {
	v, ok := m[key]
	if !ok {
		return 0, false, nil
	}
	switch x := v.(type) {
	case uint64:
		if x > 1<<40 {
			return 0, true, fmt.Errorf("%w: %s = %d out of range", ErrInvalidConfig, key, x)
		}
		return int(x), true, nil
	case int64:
		if x < 0 || x > 1<<40 {
			return 0, true, fmt.Errorf("%w: %s = %d out of range", ErrInvalidConfig, key, x)
		}
		return int(x), true, nil
	}
	return 0, true, fmt.Errorf("%w: %s has type %T, want an integer", ErrInvalidConfig, key, v)
}

func metaFloat(m map[string]any, key string) (float64, bool, error) {
	v, ok := m[key]
	if !ok {
		return 0, false, nil
	}
	switch x := v.(type) {
	case float64:
		return x, true, nil
	case uint64:
		return float64(x), true, nil
	case int64:
		return float64(x), true, nil
	}
	return 0, true, fmt.Errorf("%w: %s has type %T, want a number", ErrInvalidConfig, key, v)
}

// f32Decimal returns the float64 whose decimal form is the shortest one that
// round-trips the float32 value (GGUF stores 1e-5 as 9.99999974738e-06).
func f32Decimal(v float64) float64 {
	s := strconv.FormatFloat(float64(float32(v)), 'g', -1, 32)
	out, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return v
	}
	return out
}

// ggufConfig maps llama.* metadata to a Config.
func ggufConfig(f *ggufFile, vocabFromTokens int) (Config, error) {
	m := f.Metadata
	arch, _ := m["general.architecture"].(string)
	if arch != "llama" {
		return Config{}, fmt.Errorf("%w: general.architecture %q (only llama imports)", ErrUnknownArchitecture, arch)
	}
	c := Config{Architecture: ArchLlama, ModelType: "llama", TorchDtype: "float32", RopeTheta: DefaultRopeTheta, RMSNormEps: DefaultRMSNormEps}
	ints := []struct {
		key      string
		dst      *int
		required bool
	}{
		{"llama.embedding_length", &c.HiddenSize, true},
		{"llama.feed_forward_length", &c.IntermediateSize, true},
		{"llama.block_count", &c.NumLayers, true},
		{"llama.attention.head_count", &c.NumHeads, true},
		{"llama.attention.head_count_kv", &c.NumKVHeads, false},
		{"llama.context_length", &c.MaxPositionEmbeddings, true},
		{"llama.vocab_size", &c.VocabSize, false},
	}
	for _, it := range ints {
		v, ok, err := metaUint(m, it.key)
		if err != nil {
			return Config{}, err
		}
		if !ok && it.required {
			return Config{}, fmt.Errorf("%w: metadata %s is missing", ErrInvalidConfig, it.key)
		}
		if ok {
			*it.dst = v
		}
	}
	if c.NumHeads <= 0 || c.HiddenSize <= 0 {
		return Config{}, fmt.Errorf("%w: num_attention_heads (llama.attention.head_count) %d and hidden_size (llama.embedding_length) %d must be positive", ErrInvalidConfig, c.NumHeads, c.HiddenSize)
	}
	if c.NumKVHeads == 0 {
		c.NumKVHeads = c.NumHeads
	}
	if c.VocabSize == 0 {
		c.VocabSize = vocabFromTokens
	}
	c.HeadDim = c.HiddenSize / c.NumHeads
	if v, ok, err := metaUint(m, "llama.attention.key_length"); err != nil {
		return Config{}, err
	} else if ok {
		c.HeadDim = v
	}
	if v, ok, err := metaUint(m, "llama.rope.dimension_count"); err != nil {
		return Config{}, err
	} else if ok && v != c.HeadDim {
		return Config{}, fmt.Errorf("%w: llama.rope.dimension_count %d differs from head dim %d (partial RoPE)", ErrUnsupported, v, c.HeadDim)
	}
	if v, ok, err := metaFloat(m, "llama.attention.layer_norm_rms_epsilon"); err != nil {
		return Config{}, err
	} else if ok {
		c.RMSNormEps = f32Decimal(v)
	}
	if v, ok, err := metaFloat(m, "llama.rope.freq_base"); err != nil {
		return Config{}, err
	} else if ok {
		c.RopeTheta = f32Decimal(v)
	}
	if st, ok := m["llama.rope.scaling.type"].(string); ok && st != "none" && st != "" {
		return Config{}, fmt.Errorf("%w: llama.rope.scaling.type %q", ErrUnsupported, st)
	}
	if v, ok, err := metaUint(m, "tokenizer.ggml.bos_token_id"); err != nil {
		return Config{}, err
	} else if ok {
		c.BOSTokenID = v
	}
	if v, ok, err := metaUint(m, "tokenizer.ggml.eos_token_id"); err != nil {
		return Config{}, err
	} else if ok {
		c.EOSTokenIDs = []int{v}
	}
	return c, nil
}

// ggufWeights maps the llama.cpp tensor names a GGUF file of config c may
// hold to the decoder's weights (Layout), attention biases and an untied
// head included: the file's tensors decide those.
func ggufWeights(c Config) map[string]Weight {
	c.AttentionBias, c.TieWordEmbeddings = true, false
	m := map[string]Weight{}
	for _, w := range Layout(c) {
		m[w.GGUF] = w
	}
	return m
}

// unpermuteRoPE undoes llama.cpp's convert permutation of Q/K rows: within
// each head, GGUF row 2*i+j holds Hugging Face row j*half+i. It works on
// weights [heads*headDim, cols] and biases [heads*headDim].
func unpermuteRoPE(t *Tensor, heads int) error {
	rows := t.Shape[0]
	if heads <= 0 || rows%heads != 0 || (rows/heads)%2 != 0 {
		return fmt.Errorf("%w: %d rows do not split into %d heads of even size", ErrShape, rows, heads)
	}
	cols := 1
	for _, d := range t.Shape[1:] {
		cols *= d
	}
	hd := rows / heads
	half := hd / 2
	out := make([]float32, len(t.Data))
	for h := 0; h < heads; h++ {
		for i := 0; i < half; i++ {
			for j := 0; j < 2; j++ {
				src := (h*hd + 2*i + j) * cols
				dst := (h*hd + j*half + i) * cols
				copy(out[dst:dst+cols], t.Data[src:src+cols])
			}
		}
	}
	t.Data = out
	if t.Quant != nil { // the same rows of the quantized form (gguf_quant.go)
		t.Quant = t.Quant.PermuteRows(func(r int) int {
			h, k := r/hd, r%hd
			return h*hd + 2*(k%half) + k/half
		})
	}
	return nil
}

// ImportGGUF converts a llama-architecture GGUF file with F32, F16 or BF16
// tensors into a Hugging Face checkpoint directory: config.json,
// generation_config.json, model.safetensors (F32, Q/K rows back in the
// Hugging Face rotate-half order), and, from the llama SentencePiece vocab in
// its metadata, tokenizer.json, tokenizer_config.json and
// special_tokens_map.json.
//
// Quantized tensors (Q8_0, Q4_0, Q4_K, Q6_K; gguf_quant.go) stay quantized:
// the directory is then §4.3's (SaveQuantized). ImportGGUFDequantized
// writes them as F32 instead.
func ImportGGUF(ggufPath, outDir string) error { return importGGUF(ggufPath, outDir, false) }

// ImportGGUFDequantized is ImportGGUF with every quantized tensor written
// dequantized, as F32.
func ImportGGUFDequantized(ggufPath, outDir string) error {
	return importGGUF(ggufPath, outDir, true)
}

func importGGUF(ggufPath, outDir string, dequantize bool) error {
	fh, f, size, err := openGGUF(ggufPath)
	if err != nil {
		return err
	}
	defer fh.Close()
	vocab, err := ggufVocab(f)
	if err != nil {
		return fmt.Errorf("gguf %s: %w", ggufPath, err)
	}
	cfg, err := ggufConfig(f, len(vocab.tokens))
	if err != nil {
		return fmt.Errorf("gguf %s: %w", ggufPath, err)
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("gguf %s: %w", ggufPath, err)
	}
	if err := checkGGUFLayout(f, size, ggufPath); err != nil {
		return err
	}
	tensors := make(map[string]*Tensor, len(f.Tensors))
	byGGUF := ggufWeights(cfg)
	cfg.TieWordEmbeddings = true // unless the file has an output (head) tensor
	for _, ti := range f.Tensors {
		w, ok := byGGUF[ti.Name]
		if !ok {
			return fmt.Errorf("gguf %s: tensor %q: %w: no Hugging Face equivalent (rope_freqs and other extras are not imported)", ggufPath, ti.Name, ErrUnsupported)
		}
		t, err := readGGUFTensor(fh, size, f, ti, ggufPath)
		if err != nil {
			return err
		}
		if w.Module == "q_proj" || w.Module == "k_proj" {
			heads := cfg.NumHeads
			if w.Module == "k_proj" {
				heads = cfg.NumKVHeads
			}
			if err := unpermuteRoPE(t, heads); err != nil {
				return fmt.Errorf("gguf %s: tensor %q: %w", ggufPath, ti.Name, err)
			}
		}
		if w.Bias {
			cfg.AttentionBias = true
		}
		if w.Module == "lm_head" {
			cfg.TieWordEmbeddings = false
		}
		tensors[w.Name] = t
	}
	if err := CheckTensors(cfg, tensors, ggufPath); err != nil {
		return err
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return fmt.Errorf("import gguf: %w", err)
	}
	gen := GenerationConfig{BOSTokenID: cfg.BOSTokenID, EOSTokenIDs: cfg.EOSTokenIDs, MaxLength: cfg.MaxPositionEmbeddings}
	if dequantize {
		dequantizeAll(tensors)
	}
	if qc, ok := importQuantConfig(tensors); ok {
		if err := vocab.write(outDir, cfg.MaxPositionEmbeddings); err != nil {
			return err
		}
		return SaveQuantized(outDir, &Checkpoint{Config: cfg, Generation: gen, Tensors: tensors}, qc)
	}
	meta := map[string]string{"format": "pt", "source": filepath.Base(ggufPath)}
	if err := WriteSafetensors(filepath.Join(outDir, WeightsFile), tensors, meta); err != nil {
		return err
	}
	if err := writeJSONAtomic(filepath.Join(outDir, GenerationConfigFile), gen); err != nil {
		return err
	}
	if err := vocab.write(outDir, cfg.MaxPositionEmbeddings); err != nil {
		return err
	}
	return writeJSONAtomic(filepath.Join(outDir, ConfigFile), cfg)
}

// spmVocab is a llama SentencePiece vocabulary from GGUF metadata.
type spmVocab struct {
	tokens                 []string
	scores                 []float64
	types                  []int
	bos, eos, unk          int
	hasBOS, hasEOS, hasUnk bool
	addBOS, addEOS         bool
	chatTemplate           string
}

func ggufVocab(f *ggufFile) (*spmVocab, error) {
	m := f.Metadata
	model, _ := m["tokenizer.ggml.model"].(string)
	if model != "llama" {
		return nil, fmt.Errorf("%w: tokenizer.ggml.model %q (only the llama SentencePiece vocab imports)", ErrUnsupported, model)
	}
	rawTokens, ok := m["tokenizer.ggml.tokens"].([]any)
	if !ok || len(rawTokens) == 0 {
		return nil, fmt.Errorf("%w: tokenizer.ggml.tokens missing or not an array", ErrInvalidConfig)
	}
	v := &spmVocab{tokens: make([]string, len(rawTokens)), scores: make([]float64, len(rawTokens)), types: make([]int, len(rawTokens))}
	for i, t := range rawTokens {
		s, ok := t.(string)
		if !ok {
			return nil, fmt.Errorf("%w: tokenizer.ggml.tokens[%d] is %T, want a string", ErrInvalidConfig, i, t)
		}
		v.tokens[i] = s
		v.types[i] = spmNormal
	}
	if raw, ok := m["tokenizer.ggml.scores"].([]any); ok {
		if len(raw) != len(rawTokens) {
			return nil, fmt.Errorf("%w: %d scores for %d tokens", ErrInvalidConfig, len(raw), len(rawTokens))
		}
		for i, s := range raw {
			x, ok := s.(float64)
			if !ok {
				return nil, fmt.Errorf("%w: tokenizer.ggml.scores[%d] is %T", ErrInvalidConfig, i, s)
			}
			v.scores[i] = x
		}
	}
	if raw, ok := m["tokenizer.ggml.token_type"].([]any); ok {
		if len(raw) != len(rawTokens) {
			return nil, fmt.Errorf("%w: %d token types for %d tokens", ErrInvalidConfig, len(raw), len(rawTokens))
		}
		for i, s := range raw {
			switch x := s.(type) {
			case int64:
				v.types[i] = int(x)
			case uint64:
				v.types[i] = int(min(x, 1<<20))
			default:
				return nil, fmt.Errorf("%w: tokenizer.ggml.token_type[%d] is %T", ErrInvalidConfig, i, s)
			}
		}
	}
	ids := []struct {
		key string
		dst *int
		ok  *bool
	}{
		{"tokenizer.ggml.bos_token_id", &v.bos, &v.hasBOS},
		{"tokenizer.ggml.eos_token_id", &v.eos, &v.hasEOS},
		{"tokenizer.ggml.unknown_token_id", &v.unk, &v.hasUnk},
	}
	for _, id := range ids {
		x, ok, err := metaUint(m, id.key)
		if err != nil {
			return nil, err
		}
		if ok {
			if x >= len(v.tokens) {
				return nil, fmt.Errorf("%w: %s %d outside the vocabulary of %d", ErrInvalidConfig, id.key, x, len(v.tokens))
			}
			*id.dst, *id.ok = x, true
		}
	}
	v.addBOS = true
	if b, ok := m["tokenizer.ggml.add_bos_token"].(bool); ok {
		v.addBOS = b
	}
	if b, ok := m["tokenizer.ggml.add_eos_token"].(bool); ok {
		v.addEOS = b
	}
	v.chatTemplate, _ = m["tokenizer.chat_template"].(string)
	return v, nil
}

// spmMerges derives BPE merges from a SentencePiece vocab the way Hugging
// Face's SentencePieceExtractor does: every split of a piece into two pieces
// of the vocab is a merge with the piece's score; within a piece, splits are
// ordered by the ids of (left, right); all merges are then sorted by score,
// highest first, stably.
func spmMerges(tokens []string, scores []float64) [][2]string {
	ids := make(map[string]int, len(tokens))
	for i, t := range tokens {
		if _, dup := ids[t]; !dup {
			ids[t] = i
		}
	}
	type merge struct {
		l, r  string
		score float64
	}
	var merges []merge
	for i, piece := range tokens {
		if ids[piece] != i {
			continue // the extractor walks a dict: duplicates count once
		}
		var local []merge
		for k := 1; k < len(piece); k++ {
			l, r := piece[:k], piece[k:]
			_, okL := ids[l]
			_, okR := ids[r]
			if okL && okR {
				local = append(local, merge{l, r, scores[i]})
			}
		}
		sort.SliceStable(local, func(a, b int) bool {
			if ids[local[a].l] != ids[local[b].l] {
				return ids[local[a].l] < ids[local[b].l]
			}
			return ids[local[a].r] < ids[local[b].r]
		})
		merges = append(merges, local...)
	}
	sort.SliceStable(merges, func(a, b int) bool { return merges[a].score > merges[b].score })
	out := make([][2]string, len(merges))
	for i, m := range merges {
		out[i] = [2]string{m.l, m.r}
	}
	return out
}

// orderedVocab marshals token→id in id order, as Hugging Face writes it.
type orderedVocab []string

func (v orderedVocab) MarshalJSON() ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	out := []byte{'{'}
	seen := make(map[string]bool, len(v))
	first := true
	for id, tok := range v {
		if seen[tok] {
			continue
		}
		seen[tok] = true
		buf.Reset()
		if err := enc.Encode(tok); err != nil {
			return nil, err
		}
		if !first {
			out = append(out, ',')
		}
		first = false
		out = append(out, bytes.TrimSpace(buf.Bytes())...)
		out = append(out, ':')
		out = strconv.AppendInt(out, int64(id), 10)
	}
	return append(out, '}'), nil
}

type addedToken struct {
	ID         int    `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	Normalized bool   `json:"normalized"`
	Special    bool   `json:"special"`
}

// tokenizerJSON builds a Hugging Face tokenizer.json equivalent to
// transformers' LlamaConverter (legacy mode) for this vocab: a BPE model
// with byte_fallback, a "▁" prepend/replace normalizer and the matching
// decoder, and a post-processor that adds BOS.
func (v *spmVocab) tokenizerJSON() map[string]any {
	var added []addedToken
	for i, t := range v.types {
		switch t {
		case spmUnknown, spmControl:
			added = append(added, addedToken{ID: i, Content: v.tokens[i], Special: true})
		case spmUserDefined:
			added = append(added, addedToken{ID: i, Content: v.tokens[i], Normalized: false, Special: false})
		}
	}
	merges := spmMerges(v.tokens, v.scores)
	mergeStrs := make([]string, len(merges))
	for i, m := range merges {
		mergeStrs[i] = m[0] + " " + m[1]
	}
	var unk any
	if v.hasUnk {
		unk = v.tokens[v.unk]
	}
	var post any
	if v.hasBOS && v.addBOS || v.hasEOS && v.addEOS {
		single := []any{}
		pair := []any{}
		special := map[string]any{}
		if v.hasBOS && v.addBOS {
			b := v.tokens[v.bos]
			single = append(single, map[string]any{"SpecialToken": map[string]any{"id": b, "type_id": 0}})
			pair = append(pair, map[string]any{"SpecialToken": map[string]any{"id": b, "type_id": 0}})
			special[b] = map[string]any{"id": b, "ids": []int{v.bos}, "tokens": []string{b}}
		}
		single = append(single, map[string]any{"Sequence": map[string]any{"id": "A", "type_id": 0}})
		pair = append(pair, map[string]any{"Sequence": map[string]any{"id": "A", "type_id": 0}})
		if v.hasEOS && v.addEOS {
			e := v.tokens[v.eos]
			single = append(single, map[string]any{"SpecialToken": map[string]any{"id": e, "type_id": 0}})
			pair = append(pair, map[string]any{"SpecialToken": map[string]any{"id": e, "type_id": 0}})
			special[e] = map[string]any{"id": e, "ids": []int{v.eos}, "tokens": []string{e}}
		}
		if v.hasBOS && v.addBOS {
			b := v.tokens[v.bos]
			pair = append(pair, map[string]any{"SpecialToken": map[string]any{"id": b, "type_id": 1}})
		}
		pair = append(pair, map[string]any{"Sequence": map[string]any{"id": "B", "type_id": 1}})
		if v.hasEOS && v.addEOS {
			e := v.tokens[v.eos]
			pair = append(pair, map[string]any{"SpecialToken": map[string]any{"id": e, "type_id": 1}})
		}
		post = map[string]any{"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": special}
	}
	return map[string]any{
		"version":      "1.0",
		"truncation":   nil,
		"padding":      nil,
		"added_tokens": added,
		"normalizer": map[string]any{
			"type": "Sequence",
			"normalizers": []any{
				map[string]any{"type": "Prepend", "prepend": "▁"},
				map[string]any{"type": "Replace", "pattern": map[string]any{"String": " "}, "content": "▁"},
			},
		},
		"pre_tokenizer":  nil,
		"post_processor": post,
		"decoder": map[string]any{
			"type": "Sequence",
			"decoders": []any{
				map[string]any{"type": "Replace", "pattern": map[string]any{"String": "▁"}, "content": " "},
				map[string]any{"type": "ByteFallback"},
				map[string]any{"type": "Fuse"},
				map[string]any{"type": "Strip", "content": " ", "start": 1, "stop": 0},
			},
		},
		"model": map[string]any{
			"type":                      "BPE",
			"dropout":                   nil,
			"unk_token":                 unk,
			"continuing_subword_prefix": nil,
			"end_of_word_suffix":        nil,
			"fuse_unk":                  true,
			"byte_fallback":             true,
			"ignore_merges":             false,
			"vocab":                     orderedVocab(v.tokens),
			"merges":                    mergeStrs,
		},
	}
}

// write writes tokenizer.json, tokenizer_config.json and
// special_tokens_map.json into dir.
func (v *spmVocab) write(dir string, maxLen int) error {
	if err := writeJSONAtomic(filepath.Join(dir, TokenizerFile), v.tokenizerJSON()); err != nil {
		return err
	}
	special := map[string]any{}
	tc := map[string]any{
		"add_bos_token":                 v.addBOS,
		"add_eos_token":                 v.addEOS,
		"pad_token":                     nil,
		"legacy":                        true,
		"clean_up_tokenization_spaces":  false,
		"model_max_length":              maxLen,
		"tokenizer_class":               "LlamaTokenizerFast",
		"sp_model_kwargs":               map[string]any{},
		"spaces_between_special_tokens": false,
	}
	for _, s := range []struct {
		key string
		id  int
		ok  bool
	}{{"bos_token", v.bos, v.hasBOS}, {"eos_token", v.eos, v.hasEOS}, {"unk_token", v.unk, v.hasUnk}} {
		if s.ok {
			special[s.key] = v.tokens[s.id]
			tc[s.key] = v.tokens[s.id]
		}
	}
	if v.chatTemplate != "" {
		tc["chat_template"] = v.chatTemplate
	}
	if err := writeJSONAtomic(filepath.Join(dir, TokenizerConfigFile), tc); err != nil {
		return err
	}
	return writeJSONAtomic(filepath.Join(dir, SpecialTokensMapFile), special)
}
