package checkpoint

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
)

// ExportGGUF writes the float checkpoint in dir as a llama.cpp GGUF file
// (version 3, every tensor F32): the llama.* metadata of its config, the
// Q/K rows permuted the way llama.cpp's converter does (the inverse of
// ImportGGUF's), and its vocabulary as a llama SentencePiece vocab. Only
// the byte-level tokenizer that Init writes is exported: ids 0-255 become
// byte tokens <0xXX> (the byte each stands for), the special tokens
// control tokens, so llama.cpp loads the file and ImportGGUF reads it
// back. It is the way to hand a model of a preset to llama.cpp, or to
// QuantizeGGUF.
func ExportGGUF(dir, dst string) error {
	if q, err := IsQuantized(dir); err != nil {
		return fmt.Errorf("export gguf %s: %w", dir, err)
	} else if q {
		return fmt.Errorf("export gguf %s: %w: a quantized directory (export the float model, then model quantize the GGUF file)", dir, ErrUnsupported)
	}
	ck, err := Load(dir)
	if err != nil {
		return fmt.Errorf("export gguf %s: %w", dir, err)
	}
	c := ck.Config
	if c.Architecture != ArchLlama || c.AttentionBias || c.SlidingWindow > 0 || c.RopeScaling != nil {
		return fmt.Errorf("export gguf %s: %w: only a plain llama (no biases, sliding window or rope scaling) exports", dir, ErrUnsupported)
	}
	tokens, types, err := byteVocabForGGUF(dir, c.VocabSize)
	if err != nil {
		return fmt.Errorf("export gguf %s: %w", dir, err)
	}
	var g ggufWriter
	g.kv("general.architecture", "llama")
	g.kv("general.name", filepath.Base(dir))
	g.kv("general.file_type", uint32(0)) // all F32
	g.kv("llama.context_length", uint32(c.MaxPositionEmbeddings))
	g.kv("llama.embedding_length", uint32(c.HiddenSize))
	g.kv("llama.feed_forward_length", uint32(c.IntermediateSize))
	g.kv("llama.block_count", uint32(c.NumLayers))
	g.kv("llama.attention.head_count", uint32(c.NumHeads))
	g.kv("llama.attention.head_count_kv", uint32(c.NumKVHeads))
	g.kv("llama.attention.key_length", uint32(c.HeadDim))
	g.kv("llama.attention.value_length", uint32(c.HeadDim))
	g.kv("llama.rope.dimension_count", uint32(c.HeadDim))
	g.kv("llama.attention.layer_norm_rms_epsilon", float32(c.RMSNormEps))
	g.kv("llama.rope.freq_base", float32(c.RopeTheta))
	g.kv("llama.vocab_size", uint32(c.VocabSize))
	g.kv("tokenizer.ggml.model", "llama")
	g.kv("tokenizer.ggml.tokens", tokens)
	g.kv("tokenizer.ggml.scores", make([]float32, len(tokens)))
	g.kv("tokenizer.ggml.token_type", types)
	g.kv("tokenizer.ggml.bos_token_id", uint32(c.BOSTokenID))
	if len(c.EOSTokenIDs) > 0 {
		g.kv("tokenizer.ggml.eos_token_id", uint32(c.EOSTokenIDs[0]))
	}
	if p := ck.Generation.PadTokenID; p != nil {
		g.kv("tokenizer.ggml.padding_token_id", uint32(*p))
	}
	g.kv("tokenizer.ggml.add_bos_token", true)
	for _, w := range Layout(c) {
		t := ck.Tensors[w.Name]
		if w.Module == "lm_head" && c.TieWordEmbeddings {
			continue // llama.cpp ties a file without output.weight
		}
		if t == nil {
			return fmt.Errorf("export gguf %s: tensor %q: %w", dir, w.Name, ErrMissingTensor)
		}
		switch w.Module {
		case "q_proj":
			t = permuteRoPE(t, c.NumHeads)
		case "k_proj":
			t = permuteRoPE(t, c.NumKVHeads)
		}
		g.tensor(w.GGUF, t)
	}
	return writeAtomic(dst, g.writeTo)
}

// byteVocabForGGUF reads dir's tokenizer.json, which must be Init's
// byte-level one (vocab size tokens: 256 byte symbols, then special ones),
// and returns llama.cpp's tokens and token types for it.
func byteVocabForGGUF(dir string, vocabSize int) ([]string, []int32, error) {
	raw, err := os.ReadFile(filepath.Join(dir, TokenizerFile))
	if err != nil {
		return nil, nil, err
	}
	var tj struct {
		Model struct {
			Type   string         `json:"type"`
			Vocab  map[string]int `json:"vocab"`
			Merges []any          `json:"merges"`
		} `json:"model"`
		AddedTokens []struct {
			ID      int    `json:"id"`
			Content string `json:"content"`
		} `json:"added_tokens"`
	}
	if err := json.Unmarshal(raw, &tj); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", TokenizerFile, err)
	}
	tokens := make([]string, vocabSize)
	types := make([]int32, vocabSize)
	byteOf := map[string]int{}
	for b, s := range byteSymbols() {
		byteOf[s] = b
	}
	if tj.Model.Type != "BPE" || len(tj.Model.Merges) != 0 || len(tj.Model.Vocab) != 256 {
		return nil, nil, fmt.Errorf("%s: %w: only the byte-level tokenizer of model init (256 byte symbols, no merges) exports to GGUF", TokenizerFile, ErrUnsupported)
	}
	for s, id := range tj.Model.Vocab {
		b, ok := byteOf[s]
		if !ok || id < 0 || id >= vocabSize {
			return nil, nil, fmt.Errorf("%s: %w: vocab entry %q (id %d) is not a byte symbol within the vocabulary", TokenizerFile, ErrUnsupported, s, id)
		}
		tokens[id], types[id] = fmt.Sprintf("<0x%02X>", b), ggufTokenByte
	}
	for _, a := range tj.AddedTokens {
		if a.ID < 0 || a.ID >= vocabSize {
			return nil, nil, fmt.Errorf("%s: added token %q: id %d outside the vocabulary of %d", TokenizerFile, a.Content, a.ID, vocabSize)
		}
		tokens[a.ID], types[a.ID] = a.Content, ggufTokenControl
	}
	for id, t := range tokens {
		if t == "" {
			tokens[id], types[id] = fmt.Sprintf("<unused%d>", id), ggufTokenUnused
		}
	}
	return tokens, types, nil
}

// byteSymbols is GPT-2's symbol for each byte value: the printable bytes
// stand for themselves, the others for U+0100 onward in byte order (the
// alphabet of byteLevelAlphabet).
func byteSymbols() [256]string {
	var out [256]string
	n := 0
	for b := range 256 {
		if b >= '!' && b <= '~' || b >= 0xA1 && b <= 0xAC || b >= 0xAE {
			out[b] = string(rune(b))
		} else {
			out[b] = string(rune(256 + n))
			n++
		}
	}
	return out
}

// permuteRoPE applies llama.cpp's converter permutation to Q/K rows (the
// inverse of unpermuteRoPE): within each head, GGUF row 2*i+j holds
// Hugging Face row j*half+i.
func permuteRoPE(t *Tensor, heads int) *Tensor {
	rows, cols := t.Shape[0], len(t.Data)/t.Shape[0]
	hd := rows / heads
	half := hd / 2
	out := &Tensor{Shape: t.Shape, Data: make([]float32, len(t.Data))}
	for h := range heads {
		for i := range half {
			for j := range 2 {
				dst := (h*hd + 2*i + j) * cols
				src := (h*hd + j*half + i) * cols
				copy(out.Data[dst:dst+cols], t.Data[src:src+cols])
			}
		}
	}
	return out
}

// SentencePiece token types of tokenizer.ggml.token_type.
const (
	ggufTokenControl int32 = 3
	ggufTokenUnused  int32 = 5
	ggufTokenByte    int32 = 6
)

// ggufWriter gathers a GGUF file's metadata and F32 tensors.
type ggufWriter struct {
	head    []byte // the metadata entries
	nkv     int
	infos   []ggufTensorInfo
	tensors [][]byte
}

func appendGGUFStr(b []byte, s string) []byte {
	b = binary.LittleEndian.AppendUint64(b, uint64(len(s)))
	return append(b, s...)
}

// kv appends one metadata entry: string, uint32, float32, bool, []string,
// []float32 or []int32.
func (g *ggufWriter) kv(key string, val any) {
	b := appendGGUFStr(g.head, key)
	le := binary.LittleEndian
	switch v := val.(type) {
	case string:
		b = appendGGUFStr(le.AppendUint32(b, ggufString), v)
	case uint32:
		b = le.AppendUint32(le.AppendUint32(b, ggufUint32), v)
	case float32:
		b = le.AppendUint32(le.AppendUint32(b, ggufFloat32), math.Float32bits(v))
	case bool:
		b = le.AppendUint32(b, ggufBool)
		if v {
			b = append(b, 1)
		} else {
			b = append(b, 0)
		}
	case []string:
		b = le.AppendUint64(le.AppendUint32(le.AppendUint32(b, ggufArray), ggufString), uint64(len(v)))
		for _, s := range v {
			b = appendGGUFStr(b, s)
		}
	case []float32:
		b = le.AppendUint64(le.AppendUint32(le.AppendUint32(b, ggufArray), ggufFloat32), uint64(len(v)))
		for _, x := range v {
			b = le.AppendUint32(b, math.Float32bits(x))
		}
	case []int32:
		b = le.AppendUint64(le.AppendUint32(le.AppendUint32(b, ggufArray), ggufInt32), uint64(len(v)))
		for _, x := range v {
			b = le.AppendUint32(b, uint32(x))
		}
	default:
		panic(fmt.Sprintf("ggufWriter.kv %s: value of type %T", key, val))
	}
	g.head, g.nkv = b, g.nkv+1
}

// tensor appends t as F32 under name (dims in GGML order).
func (g *ggufWriter) tensor(name string, t *Tensor) {
	dims := make([]uint64, len(t.Shape))
	for i, d := range t.Shape {
		dims[len(dims)-1-i] = uint64(d)
	}
	data := make([]byte, 0, 4*len(t.Data))
	for _, v := range t.Data {
		data = binary.LittleEndian.AppendUint32(data, math.Float32bits(v))
	}
	g.infos = append(g.infos, ggufTensorInfo{Name: name, Dims: dims, Type: ggmlF32})
	g.tensors = append(g.tensors, data)
}

func (g *ggufWriter) writeTo(w io.Writer) error {
	le := binary.LittleEndian
	b := le.AppendUint32([]byte(ggufMagic), 3)
	b = le.AppendUint64(b, uint64(len(g.infos)))
	b = le.AppendUint64(b, uint64(g.nkv))
	b = append(b, g.head...)
	var off uint64
	for i, ti := range g.infos {
		b = appendGGUFStr(b, ti.Name)
		b = le.AppendUint32(b, uint32(len(ti.Dims)))
		for _, d := range ti.Dims {
			b = le.AppendUint64(b, d)
		}
		b = le.AppendUint64(le.AppendUint32(b, ti.Type), off)
		off += alignUp(uint64(len(g.tensors[i])), ggufDefaultAlignment)
	}
	b = append(b, make([]byte, alignUp(uint64(len(b)), ggufDefaultAlignment)-uint64(len(b)))...)
	if _, err := w.Write(b); err != nil {
		return err
	}
	for _, data := range g.tensors {
		pad := alignUp(uint64(len(data)), ggufDefaultAlignment) - uint64(len(data))
		if _, err := w.Write(append(data, make([]byte, pad)...)); err != nil {
			return err
		}
	}
	return nil
}

func alignUp(n, a uint64) uint64 { return (n + a - 1) / a * a }
