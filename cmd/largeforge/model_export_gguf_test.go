package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/largeforge/largeforge/model/checkpoint"
)

// model export-gguf writes a preset as GGUF, model quantize --gguf-type
// turns it into K-quants, and import-gguf keeps them quantized; the flag
// is refused with --bits or for a directory, an unknown type is refused.
func TestModelExportGGUFAndKQuants(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	src, f32, q := filepath.Join(dir, "k256"), filepath.Join(dir, "k256.gguf"), filepath.Join(dir, "k256.q4_k_m.gguf")
	for _, args := range [][]string{
		{"model", "init", "--preset", "k256", "--output", src},
		{"model", "export-gguf", src, f32},
		{"model", "quantize", "--gguf-type", "q4_k_m", f32, q},
		{"model", "import-gguf", q, "--output", filepath.Join(dir, "m")},
	} {
		if out, err := runCLI(t, ctx, args...); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	if quantized, err := checkpoint.IsQuantized(filepath.Join(dir, "m")); err != nil || !quantized {
		t.Errorf("import-gguf of the K-quant file: quantized %v (%v)", quantized, err)
	}
	for _, args := range [][]string{
		{"model", "quantize", "--gguf-type", "q4_k", "--bits", "4", f32, filepath.Join(dir, "x.gguf")},
		{"model", "quantize", "--gguf-type", "q4_k", src, filepath.Join(dir, "x")},
		{"model", "quantize", "--gguf-type", "q2_k", f32, filepath.Join(dir, "x.gguf")},
		{"model", "export-gguf", filepath.Join(dir, "m"), filepath.Join(dir, "x.gguf")},
	} {
		if _, err := runCLI(t, ctx, args...); err == nil || !strings.Contains(err.Error(), "gguf") {
			t.Errorf("%v: err %v, want a refusal naming gguf", args, err)
		}
	}
}
