package checkpoint

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// ggufKV is one metadata entry for buildGGUF. val is string, uint32, int32,
// float32, bool, []string, []float32 or []int32.
type ggufKV struct {
	key string
	val any
}

// ggufT is one tensor for buildGGUF: data already encoded, dims in GGML order.
type ggufT struct {
	name string
	dims []uint64
	typ  uint32
	data []byte
}

func appendGGUFString(b []byte, s string) []byte {
	b = binary.LittleEndian.AppendUint64(b, uint64(len(s)))
	return append(b, s...)
}

// buildGGUF writes a version 3 GGUF file the way llama.cpp lays it out.
func buildGGUF(t testing.TB, kvs []ggufKV, tensors []ggufT) []byte {
	t.Helper()
	b := []byte("GGUF")
	b = binary.LittleEndian.AppendUint32(b, 3)
	b = binary.LittleEndian.AppendUint64(b, uint64(len(tensors)))
	b = binary.LittleEndian.AppendUint64(b, uint64(len(kvs)))
	for _, kv := range kvs {
		b = appendGGUFString(b, kv.key)
		switch v := kv.val.(type) {
		case string:
			b = binary.LittleEndian.AppendUint32(b, ggufString)
			b = appendGGUFString(b, v)
		case uint32:
			b = binary.LittleEndian.AppendUint32(b, ggufUint32)
			b = binary.LittleEndian.AppendUint32(b, v)
		case int32:
			b = binary.LittleEndian.AppendUint32(b, ggufInt32)
			b = binary.LittleEndian.AppendUint32(b, uint32(v))
		case float32:
			b = binary.LittleEndian.AppendUint32(b, ggufFloat32)
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
		case bool:
			b = binary.LittleEndian.AppendUint32(b, ggufBool)
			if v {
				b = append(b, 1)
			} else {
				b = append(b, 0)
			}
		case []string:
			b = binary.LittleEndian.AppendUint32(b, ggufArray)
			b = binary.LittleEndian.AppendUint32(b, ggufString)
			b = binary.LittleEndian.AppendUint64(b, uint64(len(v)))
			for _, s := range v {
				b = appendGGUFString(b, s)
			}
		case []float32:
			b = binary.LittleEndian.AppendUint32(b, ggufArray)
			b = binary.LittleEndian.AppendUint32(b, ggufFloat32)
			b = binary.LittleEndian.AppendUint64(b, uint64(len(v)))
			for _, x := range v {
				b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
			}
		case []int32:
			b = binary.LittleEndian.AppendUint32(b, ggufArray)
			b = binary.LittleEndian.AppendUint32(b, ggufInt32)
			b = binary.LittleEndian.AppendUint64(b, uint64(len(v)))
			for _, x := range v {
				b = binary.LittleEndian.AppendUint32(b, uint32(x))
			}
		default:
			t.Fatalf("buildGGUF: unsupported value %T", v)
		}
	}
	var off uint64
	for _, ts := range tensors {
		b = appendGGUFString(b, ts.name)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(ts.dims)))
		for _, d := range ts.dims {
			b = binary.LittleEndian.AppendUint64(b, d)
		}
		b = binary.LittleEndian.AppendUint32(b, ts.typ)
		b = binary.LittleEndian.AppendUint64(b, off)
		off += (uint64(len(ts.data)) + 31) / 32 * 32
	}
	for len(b)%32 != 0 {
		b = append(b, 0)
	}
	for _, ts := range tensors {
		b = append(b, ts.data...)
		for len(b)%32 != 0 {
			b = append(b, 0)
		}
	}
	return b
}

// f32ToF16Exact encodes a float32 that half precision represents exactly
// as a normal number or zero.
func f32ToF16Exact(t testing.TB, v float32) uint16 {
	bits := math.Float32bits(v)
	sign := uint16(bits>>16) & 0x8000
	if bits&0x7fffffff == 0 {
		return sign
	}
	exp := int(bits>>23&0xff) - 127 + 15
	mant := bits & 0x7fffff
	if exp <= 0 || exp >= 31 || mant&0x1fff != 0 {
		t.Fatalf("%g is not an exact normal half", v)
	}
	return sign | uint16(exp)<<10 | uint16(mant>>13)
}

// llamaCppPermute applies convert_hf_to_gguf.py's LlamaModel.permute:
// reshape(heads, 2, rows/heads/2, cols).swapaxes(1, 2).
func llamaCppPermute(t *Tensor, heads int) *Tensor {
	rows, cols := t.Shape[0], 1
	if len(t.Shape) > 1 {
		cols = t.Shape[1]
	}
	half := rows / heads / 2
	out := &Tensor{Shape: append([]int{}, t.Shape...), Data: make([]float32, len(t.Data))}
	for h := 0; h < heads; h++ {
		for j := 0; j < 2; j++ {
			for i := 0; i < half; i++ {
				src := ((h*2+j)*half + i) * cols // [h, j, i]
				dst := ((h*half+i)*2 + j) * cols // [h, i, j]
				copy(out.Data[dst:dst+cols], t.Data[src:src+cols])
			}
		}
	}
	return out
}

// synthVocab is a small SentencePiece-like vocabulary with merges.
func synthVocab(n int) ([]string, []float32, []int32) {
	tokens := []string{"<unk>", "<s>", "</s>", "▁", "a", "b", "ab", "▁a", "▁ab", "ba", "▁b"}
	types := []int32{2, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1}
	for len(tokens) < n {
		tokens = append(tokens, fmt.Sprintf("<0x%02X>", len(tokens)))
		types = append(types, 6)
	}
	scores := make([]float32, n)
	for i := 3; i < n; i++ {
		scores[i] = -float32(i)
	}
	return tokens, scores, types
}

// synthGGUF builds a GGUF of cfg's model: q/k permuted the llama.cpp way,
// F16 for 2-D weights and F32 for norms. It returns the file and the
// Hugging Face tensors it must import to.
func synthGGUF(t testing.TB, cfg Config, mutate func(kvs *[]ggufKV, ts *[]ggufT)) ([]byte, map[string]*Tensor) {
	t.Helper()
	hf, err := InitTensors(cfg, 3)
	if err != nil {
		t.Fatal(err)
	}
	for name, ts := range hf {
		if len(ts.Shape) == 2 { // make every value exact in F16
			for i, v := range ts.Data {
				ts.Data[i] = float32(math.Round(float64(v)*4096)) / 4096
			}
		}
		if len(ts.Shape) == 1 {
			for i := range ts.Data {
				ts.Data[i] = 1 + float32(i)/7 // distinct values, exact in F32
			}
		}
		hf[name] = ts
	}
	tokens, scores, types := synthVocab(cfg.VocabSize)
	kvs := []ggufKV{
		{"general.architecture", "llama"},
		{"general.name", "synthetic"},
		{"llama.context_length", uint32(cfg.MaxPositionEmbeddings)},
		{"llama.embedding_length", uint32(cfg.HiddenSize)},
		{"llama.feed_forward_length", uint32(cfg.IntermediateSize)},
		{"llama.block_count", uint32(cfg.NumLayers)},
		{"llama.attention.head_count", uint32(cfg.NumHeads)},
		{"llama.attention.head_count_kv", uint32(cfg.NumKVHeads)},
		{"llama.rope.dimension_count", uint32(cfg.HeadDim)},
		{"llama.attention.layer_norm_rms_epsilon", float32(cfg.RMSNormEps)},
		{"llama.rope.freq_base", float32(cfg.RopeTheta)},
		{"tokenizer.ggml.model", "llama"},
		{"tokenizer.ggml.tokens", tokens},
		{"tokenizer.ggml.scores", scores},
		{"tokenizer.ggml.token_type", types},
		{"tokenizer.ggml.bos_token_id", uint32(1)},
		{"tokenizer.ggml.eos_token_id", uint32(2)},
		{"tokenizer.ggml.unknown_token_id", uint32(0)},
		{"tokenizer.chat_template", "{% for m in messages %}{{ m['content'] }}{% endfor %}"},
	}
	ggufNames := map[string]string{}
	for _, w := range Layout(cfg) {
		ggufNames[w.Name] = w.GGUF
	}
	var ts []ggufT
	for _, name := range sortedKeys(hf) {
		src := hf[name]
		g, ok := ggufNames[name]
		if !ok {
			t.Fatalf("no GGUF name for %s", name)
		}
		switch {
		case strings.HasSuffix(g, "attn_q.weight"):
			src = llamaCppPermute(src, cfg.NumHeads)
		case strings.HasSuffix(g, "attn_k.weight"):
			src = llamaCppPermute(src, cfg.NumKVHeads)
		}
		dims := make([]uint64, len(src.Shape))
		for i, d := range src.Shape {
			dims[len(dims)-1-i] = uint64(d)
		}
		var data []byte
		typ := ggmlF32
		if len(src.Shape) == 2 {
			typ = ggmlF16
			for _, v := range src.Data {
				data = binary.LittleEndian.AppendUint16(data, f32ToF16Exact(t, v))
			}
		} else {
			data = f32Bytes(src.Data...)
		}
		ts = append(ts, ggufT{name: g, dims: dims, typ: typ, data: data})
	}
	if mutate != nil {
		mutate(&kvs, &ts)
	}
	return buildGGUF(t, kvs, ts), hf
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j] < out[j-1]; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

func TestImportGGUFSynthetic(t *testing.T) {
	tied := smallConfig()
	tied.TieWordEmbeddings = true
	tests := []struct {
		name string
		cfg  Config
	}{
		{name: "gqa untied", cfg: smallConfig()},
		{name: "tied embeddings", cfg: tied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file, want := synthGGUF(t, tt.cfg, nil)
			dir := t.TempDir()
			path := writeFile(t, dir, "m.gguf", file)
			out := filepath.Join(dir, "hf")
			if err := ImportGGUF(path, out); err != nil {
				t.Fatalf("ImportGGUF: %v", err)
			}
			ck, err := Load(out)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(ck.Config, tt.cfg) {
				t.Errorf("config:\n got %+v\nwant %+v", ck.Config, tt.cfg)
			}
			for _, name := range sortedKeys(want) {
				if !reflect.DeepEqual(ck.Tensors[name], want[name]) {
					t.Errorf("tensor %s differs after import", name)
				}
			}
			tok, err := os.ReadFile(filepath.Join(out, TokenizerFile))
			if err != nil {
				t.Fatal(err)
			}
			// Merges by score: ab (-6), ▁a (-7), ▁ab (-8: "▁ ab" then "▁a b"), ba (-9), ▁b (-10).
			wantMerges := `"merges": [
      "a b",
      "▁ a",
      "▁ ab",
      "▁a b",
      "b a",
      "▁ b"
    ]`
			if !strings.Contains(string(tok), wantMerges) {
				t.Errorf("tokenizer.json merges, want %s in\n%s", wantMerges, tok)
			}
			tc, err := os.ReadFile(filepath.Join(out, TokenizerConfigFile))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(tc), `"chat_template": "{% for m in messages %}{{ m['content'] }}{% endfor %}"`) {
				t.Errorf("tokenizer_config.json lacks the GGUF chat template:\n%s", tc)
			}
		})
	}
}

func TestSPMMergesOrder(t *testing.T) {
	// Equal scores keep vocab order; within a piece, splits go by left id.
	tokens := []string{"x", "y", "z", "xy", "yz", "xyz"}
	scores := []float64{0, 0, 0, -1, -1, -1}
	got := spmMerges(tokens, scores)
	want := [][2]string{{"x", "y"}, {"y", "z"}, {"x", "yz"}, {"xy", "z"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("merges = %v, want %v", got, want)
	}
}

func TestImportGGUFErrors(t *testing.T) {
	cfg := smallConfig()
	drop := func(name string) func(*[]ggufKV, *[]ggufT) {
		return func(_ *[]ggufKV, ts *[]ggufT) {
			out := (*ts)[:0]
			for _, x := range *ts {
				if x.name != name {
					out = append(out, x)
				}
			}
			*ts = out
		}
	}
	setKV := func(key string, val any) func(*[]ggufKV, *[]ggufT) {
		return func(kvs *[]ggufKV, _ *[]ggufT) {
			for i := range *kvs {
				if (*kvs)[i].key == key {
					(*kvs)[i].val = val
				}
			}
		}
	}
	tests := []struct {
		name    string
		mutate  func(*[]ggufKV, *[]ggufT)
		cut     int // bytes removed from the end
		wantErr error
		naming  string
	}{
		{name: "unknown architecture", mutate: setKV("general.architecture", "gpt2"), wantErr: ErrUnknownArchitecture, naming: "gpt2"},
		{name: "unsupported quantized type", mutate: func(_ *[]ggufKV, ts *[]ggufT) {
			for i := range *ts {
				if (*ts)[i].name == "blk.1.ffn_up.weight" {
					(*ts)[i].typ = 6 // Q5_0
				}
			}
		}, wantErr: ErrDType, naming: "blk.1.ffn_up.weight"},
		{name: "quantized rows not whole blocks", mutate: func(_ *[]ggufKV, ts *[]ggufT) {
			for i := range *ts {
				if (*ts)[i].name == "blk.1.ffn_up.weight" {
					(*ts)[i].typ = 8 // Q8_0: rows of 16, blocks of 32
				}
			}
		}, wantErr: ErrShape, naming: "blk.1.ffn_up.weight"},
		{name: "missing tensor", mutate: drop("blk.1.ffn_down.weight"), wantErr: ErrMissingTensor, naming: "model.layers.1.mlp.down_proj.weight"},
		{name: "extra tensor", mutate: func(_ *[]ggufKV, ts *[]ggufT) {
			*ts = append(*ts, ggufT{name: "rope_freqs.weight", dims: []uint64{2}, typ: ggmlF32, data: f32Bytes(1, 1)})
		}, wantErr: ErrUnsupported, naming: "rope_freqs.weight"},
		{name: "wrong shape", mutate: func(_ *[]ggufKV, ts *[]ggufT) {
			for i := range *ts {
				if (*ts)[i].name == "output_norm.weight" {
					(*ts)[i].dims = []uint64{8}
					(*ts)[i].data = (*ts)[i].data[:32]
				}
			}
		}, wantErr: ErrShape, naming: "model.norm.weight"},
		{name: "zero heads", mutate: setKV("llama.attention.head_count", uint32(0)), wantErr: ErrInvalidConfig, naming: "num_attention_heads"},
		{name: "partial rope", mutate: setKV("llama.rope.dimension_count", uint32(2)), wantErr: ErrUnsupported, naming: "rope.dimension_count"},
		{name: "gpt2 tokenizer", mutate: setKV("tokenizer.ggml.model", "gpt2"), wantErr: ErrUnsupported, naming: "gpt2"},
		{name: "truncated", cut: 100, wantErr: ErrTruncated, naming: "blk.1.attn_v.weight"},
		{name: "overlapping tensors", mutate: func(_ *[]ggufKV, ts *[]ggufT) {
			(*ts)[1].data = nil // the next tensor starts where this one should
		}, wantErr: ErrBadHeader, naming: "overlaps"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file, _ := synthGGUF(t, cfg, tt.mutate)
			file = file[:len(file)-tt.cut]
			dir := t.TempDir()
			path := writeFile(t, dir, "m.gguf", file)
			err := ImportGGUF(path, filepath.Join(dir, "out"))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tt.naming) {
				t.Errorf("error %q should name %s and %q", err, path, tt.naming)
			}
			if _, err := os.Stat(filepath.Join(dir, "out")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("output directory written despite the error")
			}
		})
	}
	// Bad magic and unsupported version.
	dir := t.TempDir()
	for _, c := range []struct {
		data    []byte
		wantErr error
	}{
		{[]byte("GGML\x03\x00\x00\x00"), ErrBadHeader},
		{append([]byte("GGUF"), 1, 0, 0, 0), ErrUnsupported},
		{[]byte("GG"), ErrTruncated},
	} {
		p := writeFile(t, dir, "x.gguf", c.data)
		if err := ImportGGUF(p, filepath.Join(dir, "out")); !errors.Is(err, c.wantErr) {
			t.Errorf("%q: err = %v, want %v", c.data, err, c.wantErr)
		}
	}
}

func FuzzGGUF(f *testing.F) {
	cfg := Config{
		Architecture: ArchLlama, ModelType: "llama", VocabSize: 12, HiddenSize: 4,
		IntermediateSize: 4, NumLayers: 1, NumHeads: 2, NumKVHeads: 1, HeadDim: 2,
		MaxPositionEmbeddings: 16, RMSNormEps: 1e-5, RopeTheta: 10000, BOSTokenID: 1, EOSTokenIDs: []int{2},
	}
	file, _ := synthGGUF(f, cfg, nil)
	f.Add(file)
	f.Add(file[:200])
	f.Add(buildGGUF(f, []ggufKV{{"general.alignment", uint32(64)}, {"a", []int32{1, 2}}}, []ggufT{{name: "t", dims: []uint64{2, 2}, typ: ggmlBF16, data: u16Bytes(1, 2, 3, 4)}}))
	f.Add([]byte("GGUF\x03\x00\x00\x00\xff\xff\xff\xff\xff\xff\xff\xff\x00\x00\x00\x00\x00\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		g, err := readGGUFHeader(strings.NewReader(string(data)), int64(len(data)), "fuzz")
		if err != nil {
			return
		}
		if g.DataBase < 0 {
			t.Fatalf("negative data base %d", g.DataBase)
		}
		if err := checkGGUFLayout(g, int64(len(data)), "fuzz"); err != nil {
			return
		}
		total := 0
		for _, ti := range g.Tensors {
			ts, err := readGGUFTensor(bytesReaderAt(data), int64(len(data)), g, ti, "fuzz")
			if err != nil {
				continue
			}
			if len(ts.Data) != ts.NumElements() {
				t.Fatalf("tensor %q: %d values for shape %v", ti.Name, len(ts.Data), ts.Shape)
			}
			total += len(ts.Data)
		}
		if 2*total > len(data) {
			t.Fatalf("%d values decoded from %d bytes", total, len(data))
		}
	})
}
