package checkpoint

import (
	"path/filepath"
	"testing"

	"github.com/largeforge/largeforge/internal/benchenv"
	"github.com/largeforge/largeforge/internal/testenv"
)

// benchTensors is 16 MiB of float32 weights in 8 tensors.
func benchTensors() map[string]*Tensor {
	ts := map[string]*Tensor{}
	for i := 0; i < 8; i++ {
		t := &Tensor{Shape: []int{512, 1024}, Data: make([]float32, 512*1024)}
		for j := range t.Data {
			t.Data[j] = float32(j%1000) / 1000
		}
		ts[string(rune('a'+i))+".weight"] = t
	}
	return ts
}

func BenchmarkWriteSafetensors(b *testing.B) {
	benchenv.Log(b)
	ts := benchTensors()
	path := filepath.Join(b.TempDir(), "w.safetensors")
	b.SetBytes(16 << 20)
	for b.Loop() {
		if err := WriteSafetensors(path, ts, nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReadSafetensorsF32(b *testing.B) {
	benchenv.Log(b)
	path := filepath.Join(b.TempDir(), "r.safetensors")
	if err := WriteSafetensors(path, benchTensors(), nil); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(16 << 20)
	for b.Loop() {
		if _, _, err := ReadSafetensors(path); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReadSafetensorsBF16(b *testing.B) {
	benchenv.Log(b)
	var raws []rawTensor
	for i := 0; i < 8; i++ {
		raws = append(raws, rawTensor{name: string(rune('a'+i)) + ".weight", dtype: "BF16", shape: []int{512, 1024}, data: make([]byte, 2*512*1024)})
	}
	path := writeFile(b, b.TempDir(), "bf16.safetensors", buildSafetensors(b, raws, nil))
	b.SetBytes(8 << 20) // bytes read
	for b.Loop() {
		if _, _, err := ReadSafetensors(path); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkInitTiny(b *testing.B) {
	benchenv.Log(b)
	dir := b.TempDir()
	for b.Loop() {
		if err := Init("tiny", 1, dir); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkLoadStories260K(b *testing.B) {
	benchenv.Log(b)
	dir := filepath.Dir(testenv.SharedFile(b, "models/stories260K/model.safetensors"))
	for b.Loop() {
		if _, err := Load(dir); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkImportGGUFStories260K(b *testing.B) {
	benchenv.Log(b)
	path := testenv.SharedFile(b, "models/gguf/stories260K.gguf")
	out := b.TempDir()
	for b.Loop() {
		if err := ImportGGUF(path, out); err != nil {
			b.Fatal(err)
		}
	}
}
