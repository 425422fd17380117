package checkpoint

import (
	"math"
	"math/rand/v2"
)

// SharpPreset is k256 with weights shaped so that its greedy choices are
// not near-ties: a fixture for comparing engines on quantized files (two
// engines' float32 operations differ in order, so a random model's close
// top logits decide differently; this model's do not).
const SharpPreset = "k256sharp"

// Sharpening of SharpPreset (see sharpenSuccessor).
const (
	sharpEmbedScale = 6   // the embedding is this many times InitStd's
	sharpHeadWeight = 0.5 // the successor direction's weight in lm_head rows
)

func init() { presets[SharpPreset] = presets["k256"] }

// sharpen shapes a preset's freshly initialised tensors, for the presets
// that have a shaping.
func sharpen(preset string, t map[string]*Tensor, seed int64) {
	if preset == SharpPreset {
		sharpenSuccessor(t, seed)
	}
}

// sharpenSuccessor makes the next token mostly a seeded permutation of the
// current one: the embedding is scaled up so that it, not the random
// layers' contributions, dominates the residual stream, and lm_head's row
// of succ(x) gains the unit direction of x's embedding, so the last
// position's token scores its successor about sharpHeadWeight·√hidden
// above the rest. The layers (attention over the context, the MLPs) still
// move every logit, so a weight read wrongly shows in the logits.
func sharpenSuccessor(t map[string]*Tensor, seed int64) {
	emb, head := t["model.embed_tokens.weight"], t["lm_head.weight"]
	if emb == nil || head == nil || len(emb.Shape) != 2 {
		return
	}
	vocab, hidden := emb.Shape[0], emb.Shape[1]
	rng := rand.New(rand.NewPCG(uint64(seed), 0x5ea4c0de))
	bytes := min(vocab, 256)
	succ := rng.Perm(bytes)
	for i := range emb.Data {
		emb.Data[i] *= sharpEmbedScale
	}
	for x := 0; x < vocab; x++ {
		next := rng.IntN(bytes) // the special tokens' successors
		if x < bytes {
			next = succ[x]
		}
		row := emb.Data[x*hidden : (x+1)*hidden]
		var ss float64
		for _, v := range row {
			ss += float64(v) * float64(v)
		}
		k := sharpHeadWeight / math.Sqrt(ss)
		out := head.Data[next*hidden : (next+1)*hidden]
		for i, v := range row {
			out[i] += float32(k * float64(v))
		}
	}
}
