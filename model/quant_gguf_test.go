package model

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/largeforge/largeforge/internal/testenv"
	"github.com/largeforge/largeforge/model/checkpoint"
)

// stories260K.q8_0.gguf imported with its Q8_0 tensors kept quantized (on
// the int8 kernels) and dequantized both give llama.cpp's greedy ids.
func TestImportQ8_0GGUFParity(t *testing.T) {
	gguf := testenv.SharedFile(t, "models/gguf/stories260K.q8_0.gguf")
	raw, err := os.ReadFile(testenv.SharedFile(t, "models/stories260K.q8_0.reference.json"))
	if err != nil {
		t.Fatal(err)
	}
	var ref struct {
		Prompts []struct {
			Prompt    string `json:"prompt"`
			PromptIDs []int  `json:"prompt_ids"`
			GreedyIDs []int  `json:"greedy_ids"`
		} `json:"prompts"`
	}
	if err := json.Unmarshal(raw, &ref); err != nil {
		t.Fatal(err)
	}
	for _, dequantize := range []bool{false, true} {
		dir := filepath.Join(t.TempDir(), "m")
		imp := checkpoint.ImportGGUF
		if dequantize {
			imp = checkpoint.ImportGGUFDequantized
		}
		if err := imp(gguf, dir); err != nil {
			t.Fatal(err)
		}
		_, statErr := os.Stat(filepath.Join(dir, checkpoint.QuantConfigFile))
		if quantized := statErr == nil; quantized == dequantize {
			t.Fatalf("dequantize %v: quant_config.json present %v", dequantize, quantized)
		}
		m, err := Load(dir, WithEngine(EngineNative))
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		if got := m.native.qembed != nil; got == dequantize {
			t.Fatalf("dequantize %v: quantized embedding %v", dequantize, got)
		}
		var reqs []GenerateRequest
		for _, p := range ref.Prompts {
			reqs = append(reqs, GenerateRequest{PromptIDs: p.PromptIDs, Params: greedy(len(p.GreedyIDs))})
		}
		res, err := m.Generate(context.Background(), reqs)
		if err != nil {
			t.Fatal(err)
		}
		for i, p := range ref.Prompts {
			if !slices.Equal(res[i].IDs, p.GreedyIDs) {
				t.Errorf("dequantize %v, %q:\n got %v\nwant %v", dequantize, p.Prompt, res[i].IDs, p.GreedyIDs)
			}
		}
	}
}
