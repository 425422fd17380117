package checkpoint

import (
	"errors"
	"math"
	"path/filepath"
	"reflect"
	"testing"
)

// A preset exported to GGUF imports back to the same config and tensors
// (F32, Q/K permuted and back); a quantized directory and a tokenizer
// other than Init's are refused.
func TestExportGGUFRoundTrip(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "tiny")
	if err := Init("tiny", 5, src); err != nil {
		t.Fatal(err)
	}
	gguf := filepath.Join(dir, "tiny.gguf")
	if err := ExportGGUF(src, gguf); err != nil {
		t.Fatal(err)
	}
	back := filepath.Join(dir, "back")
	if err := ImportGGUF(gguf, back); err != nil {
		t.Fatal(err)
	}
	want, err := Load(src)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Load(back)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Config, want.Config) {
		t.Errorf("config:\n got %+v\nwant %+v", got.Config, want.Config)
	}
	for name, w := range want.Tensors {
		if g := got.Tensors[name]; g == nil || !reflect.DeepEqual(g.Data, w.Data) {
			t.Errorf("tensor %s differs after export and import", name)
		}
	}
	// The byte tokens: id 0 is GPT-2's "!" (byte 0x21).
	fh, f, _, err := openGGUF(gguf)
	if err != nil {
		t.Fatal(err)
	}
	fh.Close()
	if toks := f.Metadata["tokenizer.ggml.tokens"].([]any); toks[0] != "<0x21>" || toks[ByteBOSID] != "<s>" || len(toks) != ByteVocabSize {
		t.Errorf("tokens: %d, [0] %v, [%d] %v", len(toks), toks[0], ByteBOSID, toks[ByteBOSID])
	}
	if err := ExportGGUF(back, filepath.Join(dir, "x.gguf")); !errors.Is(err, ErrUnsupported) {
		t.Errorf("export of an SPM-tokenizer directory: %v, want ErrUnsupported", err)
	}
}

// The K-quant writers: a k256 matrix written as Q4_K or Q6_K reads back
// (ImportGGUFDequantized) near the original: the largest error within a
// bound relative to its super-block's largest magnitude (Q4_K's 15 steps
// span max−min, Q6_K's 63 span ±max; the fitted scales and their 6- or
// 8-bit rounding add to half a step), the rms error a small part of the
// weights' InitStd. A packing error would be far off. An unknown type is
// refused.
func TestQuantizeGGUFKQuants(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "k256")
	if err := Init("k256", 2, src); err != nil {
		t.Fatal(err)
	}
	f32 := filepath.Join(dir, "k256.gguf")
	if err := ExportGGUF(src, f32); err != nil {
		t.Fatal(err)
	}
	want, err := Load(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		typ   string
		worst float64 // the largest error, relative to a super-block's largest magnitude
		rms   float64 // the rms error, relative to InitStd
	}{{"q4_k", 0.1, 0.09}, {"q6_k", 0.02, 0.025}} {
		q := filepath.Join(dir, tc.typ+".gguf")
		if err := QuantizeGGUFType(f32, q, tc.typ); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(dir, tc.typ)
		if err := ImportGGUFDequantized(q, out); err != nil {
			t.Fatal(err)
		}
		got, err := Load(out)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"model.layers.1.mlp.down_proj.weight", "model.layers.0.self_attn.o_proj.weight", "lm_head.weight"} {
			w, g := want.Tensors[name].Data, got.Tensors[name].Data
			var worst, sumSq float64
			for b := 0; b < len(w); b += kBlock {
				var amax float64
				for _, v := range w[b : b+kBlock] {
					amax = max(amax, math.Abs(float64(v)))
				}
				for i := b; i < b+kBlock; i++ {
					d := float64(g[i] - w[i])
					worst = max(worst, math.Abs(d)/amax)
					sumSq += d * d
				}
			}
			rms := math.Sqrt(sumSq/float64(len(w))) / InitStd
			if worst > tc.worst || worst == 0 || rms > tc.rms {
				t.Errorf("%s %s: largest error %.4f of a block's largest magnitude (want at most %.3f), rms error %.4f of InitStd (want at most %.3f)", tc.typ, name, worst, tc.worst, rms, tc.rms)
			}
		}
	}
	if err := QuantizeGGUFType(f32, filepath.Join(dir, "x.gguf"), "q3_k"); !errors.Is(err, ErrQuant) {
		t.Errorf("q3_k: %v, want ErrQuant", err)
	}
}
