package model

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/largeforge/largeforge/model/checkpoint"
)

// The project's K-quant GGUF of the k256 preset (model init --seed 1,
// model export-gguf, model quantize --gguf-type q4_k_m: Q4_K and Q6_K by
// ggml's reference quantizers) is the file llama.cpp ran, digest for
// digest (testdata/k256.q4_k_m.llamacpp.json, made by
// scripts/llamacpp_greedy.mjs); imported (Q6_K kept exactly, Q4_K as int8
// in groups of 32), the project's greedy ids agree with llama.cpp's for at
// least greedyParityLlamaK ids of each prompt, and where llama.cpp stopped
// at EOS the project's next id is EOS.
func TestKQuantGGUFMatchesLlamaCpp(t *testing.T) {
	ref := loadLlamaRef(t, "testdata/k256.q4_k_m.llamacpp.json")
	dir := t.TempDir()
	src := filepath.Join(dir, "k256") // the directory's name is general.name, so part of the digest
	if err := checkpoint.Init("k256", 1, src); err != nil {
		t.Fatal(err)
	}
	f32, q := filepath.Join(dir, "k256.gguf"), filepath.Join(dir, "k256.q4_k_m.gguf")
	if err := checkpoint.ExportGGUF(src, f32); err != nil {
		t.Fatal(err)
	}
	if err := checkpoint.QuantizeGGUFType(f32, q, "q4_k_m"); err != nil {
		t.Fatal(err)
	}
	m := importLlamaRan(t, q, ref)
	if m.native.layers[0].down.q == nil || m.native.layers[0].qkv.q == nil {
		t.Fatal("the K-quant matrices are not on the quantized kernels")
	}
	eos := m.cfg.EOSTokenIDs[0]
	for _, p := range ref.Prompts {
		res, err := m.Generate(context.Background(), []GenerateRequest{{PromptIDs: p.PromptIDs, Params: greedy(64)}})
		if err != nil {
			t.Fatal(err)
		}
		got, want := res[0].IDs, p.GreedyIDs
		if len(want) < 64 { // llama.cpp stopped at EOS
			want = append(append([]int{}, want...), eos)
		}
		same := 0
		for same < min(len(got), len(want)) && got[same] == want[same] {
			same++
		}
		t.Logf("%v: the first %d of %d greedy ids are llama.cpp's", p.PromptIDs, same, len(want))
		if same < min(len(want), greedyParityLlamaK) {
			t.Errorf("%v: only the first %d greedy ids agree with llama.cpp's (want %d):\n got %v\nwant %v", p.PromptIDs, same, greedyParityLlamaK, got, want)
		}
	}
}

// greedyParityLlamaK is how many greedy ids of each prompt must agree with
// llama.cpp's on the K-quant file: 64, 42 and 18 (all, to EOS) agree. A
// randomly initialised model's top two logits are often close, so float32
// differences of the engines' order of operations move the greedy path
// after a few dozen tokens even unquantized: on k256's F32 GGUF the two
// agree on 61, 64 and 62 ids (node-llama-cpp asked for an F32 K/V cache,
// experimentalKvCacheKeyType/ValueType, gives the same ids as its F16 one).
// Rounding the activations to Q8_K blocks as llama.cpp's K-quant products
// do (tried) made it worse, not better, so what separates the engines is
// in the float operations, not in the K-quant weights. Measured with
// llama.cpp's log-probabilities (scripts/llamacpp_greedy.mjs --top=4): on
// the F32 file the diverging positions are ties to 0.0001 and 0.0004, on
// this Q4_K_M file llama.cpp puts 128 above 245 by 0.020 where the project
// puts 245 above 128 by 0.005, the engines' log-probabilities having been
// within 0.016 of each other before. TestSharpGGUFMatchesLlamaCpp checks the
// K-quant writers on a model without near-ties, every id and logprob.
const greedyParityLlamaK = 18
