package model

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"testing"

	"github.com/largeforge/largeforge/model/checkpoint"
)

// The k256sharp preset (checkpoint.SharpPreset, seed 1: every matrix of
// whole 256-blocks, its greedy choices clear: in llama.cpp's records the
// top logit leads the next by at least 2.8 at every position) written by the project as F32 and by its own
// quantizers as Q8_0, Q4_0, Q4_K, Q6_K and Q4_K_M GGUF is, digest for
// digest, the file llama.cpp (node-llama-cpp 3.21.1) ran
// (testdata/k256sharp.TYPE.llamacpp.json, scripts/llamacpp_greedy.mjs
// --top=4); imported, the project gives llama.cpp's greedy ids, all 64 of
// each prompt, and its log-probabilities of llama.cpp's four most likely
// tokens at every position agree within sharpLogprobTol, so a weight read
// differently by the two would show even where the greedy choice holds.
func TestSharpGGUFMatchesLlamaCpp(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "k256sharp") // the directory's name is general.name, so part of the digest
	if err := checkpoint.Init(checkpoint.SharpPreset, 1, src); err != nil {
		t.Fatal(err)
	}
	f32 := filepath.Join(dir, "k256sharp.gguf")
	if err := checkpoint.ExportGGUF(src, f32); err != nil {
		t.Fatal(err)
	}
	for _, typ := range []string{"f32", "q8_0", "q4_0", "q4_k", "q6_k", "q4_k_m"} {
		t.Run(typ, func(t *testing.T) {
			file := f32
			if typ != "f32" {
				file = filepath.Join(dir, "k256sharp."+typ+".gguf")
				if err := checkpoint.QuantizeGGUFType(f32, file, typ); err != nil {
					t.Fatal(err)
				}
			}
			ref := loadLlamaRef(t, "testdata/k256sharp."+typ+".llamacpp.json")
			m := importLlamaRan(t, file, ref)
			if quantized := m.native.layers[0].down.q != nil; quantized != (typ != "f32") {
				t.Fatalf("ffn_down on the quantized kernels: %v", quantized)
			}
			worst := 0.0
			for _, p := range ref.Prompts {
				params := greedy(len(p.GreedyIDs))
				params.Logprobs, params.TopLogprobs = true, len(p.TopLogprobs[0])
				res, err := m.Generate(context.Background(), []GenerateRequest{{PromptIDs: p.PromptIDs, Params: params}})
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(res[0].IDs, p.GreedyIDs) {
					t.Fatalf("%v: greedy ids differ from llama.cpp's:\n got %v\nwant %v", p.PromptIDs, res[0].IDs, p.GreedyIDs)
				}
				for i, want := range p.TopLogprobs {
					d, err := logprobGap(res[0].Logprobs[i].Top, want)
					if err != nil {
						t.Fatalf("%v, token %d: %v", p.PromptIDs, i, err)
					}
					worst = max(worst, d)
				}
			}
			t.Logf("all greedy ids are llama.cpp's; log-probabilities within %.4f of llama.cpp's", worst)
		})
	}
}

// logprobGap is the largest difference between the project's top
// log-probabilities and llama.cpp's ([id, logprob], most likely first) at
// one position: for a token both list, the two logprobs; for a token one
// lists and the other does not, how far it is above the other's last
// listed logprob. It is an error past sharpLogprobTol.
func logprobGap(got []TopLogprob, want [][2]float64) (float64, error) {
	worst := 0.0
	note := func(id int, g, w float64) error {
		worst = max(worst, math.Abs(g-w))
		if math.Abs(g-w) > sharpLogprobTol {
			return fmt.Errorf("token %d: logprob %.4f, llama.cpp's %.4f (tolerance %g)", id, g, w, sharpLogprobTol)
		}
		return nil
	}
	for _, w := range want {
		id := int(w[0])
		if j := slices.IndexFunc(got, func(g TopLogprob) bool { return g.ID == id }); j >= 0 {
			if err := note(id, got[j].Logprob, w[1]); err != nil {
				return worst, err
			}
		} else if last := got[len(got)-1].Logprob; w[1] > last {
			if err := note(id, last, w[1]); err != nil {
				return worst, err
			}
		}
	}
	for _, g := range got {
		if !slices.ContainsFunc(want, func(w [2]float64) bool { return int(w[0]) == g.ID }) {
			if last := want[len(want)-1][1]; g.Logprob > last {
				if err := note(g.ID, g.Logprob, last); err != nil {
					return worst, err
				}
			}
		}
	}
	return worst, nil
}

// sharpLogprobTol bounds how far the project's log-probabilities may be
// from llama.cpp's on the same file. Measured: 0.0006 on F32 (float32
// order of operations), 0.018 to 0.026 on the quantized files (llama.cpp
// also rounds activations to Q8_0/Q8_K blocks and keeps its KV cache in
// F16). A file of one type against llama.cpp's record of another is 0.16
// to 0.38 apart among Q4_0, Q4_K, Q4_K_M and the rest, and Q6_K 0.064
// from F32, so a tensor read as another format or off by a quantization
// step fails.
const sharpLogprobTol = 0.05
