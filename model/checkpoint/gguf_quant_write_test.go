package checkpoint

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/largeforge/largeforge/internal/testenv"
)

// The project's Q8_0 of stories260K.gguf is llama.cpp's, byte for byte:
// the same tensors quantized, the same blocks.
func TestQuantizeGGUFMatchesLlamaCpp(t *testing.T) {
	src := testenv.SharedFile(t, "models/gguf/stories260K.gguf")
	want := testenv.SharedFile(t, "models/gguf/stories260K.q8_0.gguf")
	dst := filepath.Join(t.TempDir(), "q8.gguf")
	if err := QuantizeGGUF(src, dst, 8, 0); err != nil {
		t.Fatal(err)
	}
	read := func(path string) map[string][]byte {
		fh, f, size, err := openGGUF(path)
		if err != nil {
			t.Fatal(err)
		}
		defer fh.Close()
		if err := checkGGUFLayout(f, size, path); err != nil {
			t.Fatal(err)
		}
		out := map[string][]byte{}
		for _, ti := range f.Tensors {
			n, _, err := ggufTensorBytes(ti, uint64(size-f.DataBase)-ti.Offset)
			if err != nil {
				t.Fatal(err)
			}
			b := make([]byte, n)
			if _, err := fh.ReadAt(b, f.DataBase+int64(ti.Offset)); err != nil {
				t.Fatal(err)
			}
			out[ti.Name+" "+ggmlTypeName(ti.Type)] = b
		}
		return out
	}
	got, ref := read(dst), read(want)
	if len(got) != len(ref) {
		t.Fatalf("%d tensors, llama.cpp's file has %d", len(got), len(ref))
	}
	for name, b := range ref {
		g, ok := got[name]
		if !ok {
			t.Errorf("tensor %s absent", name)
			continue
		}
		if !bytes.Equal(g, b) {
			diff := 0
			for i := range b {
				if i < len(g) && g[i] != b[i] {
					diff++
				}
			}
			t.Errorf("tensor %s: %d of %d bytes differ", name, diff, len(b))
		}
	}
	if err := QuantizeGGUF(src, dst, 4, 64); err == nil {
		t.Error("4 bits in groups of 64 written as GGUF")
	}
}
