package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/largeforge/largeforge/internal/testenv"
	"github.com/largeforge/largeforge/model/checkpoint"
)

// model quantize writes §4.3's directory, which generate serves like any
// model: int8's greedy text begins as float's.
func TestModelQuantizeCommand(t *testing.T) {
	ctx := context.Background()
	src := filepath.Dir(testenv.SharedFile(t, "models/stories260K/model.safetensors"))
	ref := loadRef(t)
	dir := t.TempDir()
	q8 := filepath.Join(dir, "q8")
	out, err := runCLI(t, ctx, "model", "quantize", "--bits", "8", src, q8)
	if err != nil || !strings.Contains(out, "8 bits") {
		t.Fatalf("quantize: %v\n%s", err, out)
	}
	for _, f := range []string{checkpoint.QuantConfigFile, checkpoint.WeightsFile, checkpoint.ConfigFile, checkpoint.TokenizerFile} {
		if _, err := os.Stat(filepath.Join(q8, f)); err != nil {
			t.Errorf("quantized dir: %v", err)
		}
	}
	q4 := filepath.Join(dir, "q4")
	if out, err := runCLI(t, ctx, "model", "quantize", "--bits", "4", src, q4); err != nil || !strings.Contains(out, "4 bits by gptq (group size 32)") {
		t.Fatalf("quantize 4 bits: %v\n%s", err, out)
	}
	out, err = runCLI(t, ctx, "--log-level", "error", "generate", "--model", q8, "--prompt", ref[0].Prompt, "--max-tokens", "16", "--temperature", "0")
	if err != nil {
		t.Fatal(err)
	}
	got := strings.TrimSuffix(out, "\n")
	if want := ref[0].Prompt + ref[0].GreedyText; len(got) <= len(ref[0].Prompt) || !strings.HasPrefix(want, got) {
		t.Errorf("int8 generate = %q, want a prefix of %q", got, want)
	}
	// import-gguf keeps Q8_0 quantized, or not with --dequantize.
	gguf := testenv.SharedFile(t, "models/gguf/stories260K.q8_0.gguf")
	for _, deq := range []bool{false, true} {
		out := filepath.Join(dir, "gguf-q8")
		args := []string{"model", "import-gguf", gguf, "--output", out}
		if deq {
			out += "-f32"
			args = []string{"model", "import-gguf", gguf, "--output", out, "--dequantize"}
		}
		if _, err := runCLI(t, ctx, args...); err != nil {
			t.Fatal(err)
		}
		if q, err := checkpoint.IsQuantized(out); err != nil || q == deq {
			t.Errorf("import-gguf --dequantize=%v: quantized %v (%v)", deq, q, err)
		}
	}
	// A GGUF file quantizes to a GGUF file (Q4_0), which imports.
	q4gguf := filepath.Join(dir, "s.q4_0.gguf")
	if _, err := runCLI(t, ctx, "model", "quantize", "--bits", "4", testenv.SharedFile(t, "models/gguf/stories260K.gguf"), q4gguf); err != nil {
		t.Fatal(err)
	}
	if _, err := runCLI(t, ctx, "model", "import-gguf", q4gguf, "--output", filepath.Join(dir, "from-q4")); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"model", "quantize", "--bits", "4", "--group-size", "64", gguf, filepath.Join(dir, "x.gguf")},
		{"model", "quantize", "--bits", "3", src, filepath.Join(dir, "x")},
		{"model", "quantize", "--bits", "4", "--group-size", "48", src, filepath.Join(dir, "x")},
		{"model", "quantize", "--bits", "8", q8, filepath.Join(dir, "x")},
		{"model", "quantize", "--bits", "4", "--method", "awq", src, filepath.Join(dir, "x")},
	} {
		if _, err := runCLI(t, ctx, args...); err == nil || !strings.Contains(err.Error(), "quantiz") {
			t.Errorf("%v: err %v, want a refusal", args, err)
		}
	}
}
