package model

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/largeforge/largeforge/internal/testenv"
	"github.com/largeforge/largeforge/model/checkpoint"
)

// llamaRef is what llama.cpp produced on a GGUF file: greedy ids per prompt.
type llamaRef struct {
	FileSHA256 string `json:"file_sha256"`
	Prompts    []struct {
		Prompt    string `json:"prompt"`
		PromptIDs []int  `json:"prompt_ids"`
		GreedyIDs []int  `json:"greedy_ids"`
		// TopLogprobs, where recorded (--top=K), holds for each greedy id
		// the K most likely tokens at its position as [id, logprob].
		TopLogprobs [][][2]float64 `json:"top_logprobs"`
	} `json:"prompts"`
}

func loadLlamaRef(t *testing.T, path string) llamaRef {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var ref llamaRef
	if err := json.Unmarshal(raw, &ref); err != nil {
		t.Fatal(err)
	}
	return ref
}

// stories260K.q8_0.gguf imported with its Q8_0 tensors kept quantized
// (products as llama.cpp computes them) and dequantized both give
// llama.cpp's greedy ids.
func TestImportQ8_0GGUFParity(t *testing.T) {
	gguf := testenv.SharedFile(t, "models/gguf/stories260K.q8_0.gguf")
	ref := loadLlamaRef(t, testenv.SharedFile(t, "models/stories260K.q8_0.reference.json"))
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

// The project's Q4_0 GGUF of stories260K (ggml's reference quantizer),
// imported kept quantized (products as llama.cpp computes them,
// quant_llama.go), gives the greedy ids that llama.cpp (node-llama-cpp
// 3.21.1) gave on the same file, recorded with the file's digest in
// testdata: all 64 for two prompts, the first 58 for the third.
func TestQ4_0GGUFMatchesLlamaCpp(t *testing.T) {
	src := testenv.SharedFile(t, "models/gguf/stories260K.gguf")
	ref := loadLlamaRef(t, "testdata/stories260K.q4_0.llamacpp.json")
	dir := t.TempDir()
	q4 := filepath.Join(dir, "q4_0.gguf")
	if err := checkpoint.QuantizeGGUF(src, q4, 4, 32); err != nil {
		t.Fatal(err)
	}
	m := importLlamaRan(t, q4, ref)
	if q := m.native.layers[0].qkv.q; q == nil || !q.llamaQ8 {
		t.Fatal("Q4_0 weights not on llama.cpp's products")
	}
	for _, p := range ref.Prompts {
		res, err := m.Generate(context.Background(), []GenerateRequest{{PromptIDs: p.PromptIDs, Params: greedy(len(p.GreedyIDs))}})
		if err != nil {
			t.Fatal(err)
		}
		same := 0
		for same < min(len(res[0].IDs), len(p.GreedyIDs)) && res[0].IDs[same] == p.GreedyIDs[same] {
			same++
		}
		t.Logf("%q: the first %d of %d greedy ids are llama.cpp's", p.Prompt, same, len(p.GreedyIDs))
		// All 64 agree on two prompts; on "Lily and Ben were" the 59th
		// differs at a real near-tie: llama.cpp's log-probabilities put
		// 337 above 298 by 0.037, the project's 298 above 337 by 0.047
		// (scripts/llamacpp_greedy.mjs --top=4). Before it the two engines'
		// log-probabilities of llama.cpp's top 4 are within 0.17 to 0.21
		// on this Q4_0 file (0.05 at the first token already) against 0.014
		// on stories260K's F32 file, so what moves them apart is the
		// quantized products' activations (llama.cpp rounds them to Q8_0
		// blocks; the rounding amplifies float32 differences), not the
		// weights: a Q4_0 block read differently would differ on every
		// token. TestSharpGGUFMatchesLlamaCpp checks the Q4_0 writer on a
		// model without near-ties.
		if same < greedyParityLlamaQ4 {
			t.Errorf("%q: only the first %d greedy ids agree with llama.cpp's (want %d):\n got %v\nwant %v", p.Prompt, same, greedyParityLlamaQ4, res[0].IDs, p.GreedyIDs)
		}
	}
}

// importLlamaRan checks that gguf is the file llama.cpp ran for ref (its
// sha256), imports it kept quantized and loads it on the native engine.
func importLlamaRan(t *testing.T, gguf string, ref llamaRef) *Model {
	t.Helper()
	data, err := os.ReadFile(gguf)
	if err != nil {
		t.Fatal(err)
	}
	if sum := fmt.Sprintf("%x", sha256.Sum256(data)); sum != ref.FileSHA256 {
		t.Fatalf("%s: sha256 %s, llama.cpp ran on %s", filepath.Base(gguf), sum, ref.FileSHA256)
	}
	out := filepath.Join(t.TempDir(), "m")
	if err := checkpoint.ImportGGUF(gguf, out); err != nil {
		t.Fatal(err)
	}
	m, err := Load(out, WithEngine(EngineNative))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// greedyParityLlamaQ4 is how many greedy ids of each prompt must agree with
// llama.cpp's on the Q4_0 file.
const greedyParityLlamaQ4 = 48
