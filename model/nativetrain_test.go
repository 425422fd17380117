package model

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/largeforge/largeforge/model/checkpoint"
)

// smallTrainConfig is a decoder small enough for finite differences, with
// grouped KV heads; tweak changes it per test case.
func smallTrainConfig(t *testing.T, tweak func(*checkpoint.Config)) checkpoint.Config {
	t.Helper()
	cfg, err := checkpoint.PresetConfig("tiny")
	if err != nil {
		t.Fatal(err)
	}
	cfg.VocabSize, cfg.HiddenSize, cfg.IntermediateSize, cfg.NumLayers = 40, 16, 24, 2
	cfg.NumHeads, cfg.NumKVHeads, cfg.HeadDim = 4, 2, 6
	cfg.BOSTokenID, cfg.EOSTokenIDs = 1, []int{2}
	if tweak != nil {
		tweak(&cfg)
	}
	return cfg
}

// randomWeights binds freshly initialised weights of cfg, with norms and
// biases away from their initial 1 and 0 so their gradients matter.
func randomWeights(t *testing.T, cfg checkpoint.Config, seed uint64) *checkpoint.Decoder[[]float32] {
	t.Helper()
	ts, err := checkpoint.InitTensors(cfg, int64(seed))
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, 99))
	d, err := checkpoint.Bind(cfg, func(w checkpoint.Weight) ([]float32, error) {
		data := ts[w.Name].Data
		if len(w.Shape) == 1 {
			for i := range data {
				data[i] += float32(0.2 * rng.NormFloat64())
			}
		} else {
			for i := range data {
				data[i] *= 4 // larger logits: a sharper softmax to differentiate
			}
		}
		return data, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// randomBatch is a right-padded batch: row r holds lens[r] tokens, targets
// are the next tokens, about two thirds of them weighted.
func randomBatch(rng *rand.Rand, vocab, seqLen int, lens []int) TrainBatch {
	b := TrainBatch{Rows: len(lens), Len: seqLen}
	n := len(lens) * seqLen
	b.Tokens, b.Targets, b.Weights = make([]int32, n), make([]int32, n), make([]float32, n)
	for r, l := range lens {
		for i := range l {
			b.Tokens[r*seqLen+i] = int32(rng.IntN(vocab))
		}
		for i := 0; i+1 < l; i++ {
			b.Targets[r*seqLen+i] = b.Tokens[r*seqLen+i+1]
			if rng.IntN(3) > 0 {
				b.Weights[r*seqLen+i] = 1
			}
		}
	}
	return b
}

// trainLoss is the summed negative log-likelihood of b under w, and its
// gradients when grads is not nil.
func trainLoss(t *testing.T, e *TrainEngine, w *checkpoint.Decoder[[]float32], b TrainBatch, grads *checkpoint.Decoder[[]float32]) float64 {
	t.Helper()
	p, err := e.Forward(context.Background(), w, b)
	if err != nil {
		t.Fatal(err)
	}
	loss, _, _ := p.Loss()
	if grads != nil {
		seed := make([]float32, len(b.Weights))
		for i, v := range b.Weights {
			seed[i] = -v
		}
		if err := p.Backward(context.Background(), seed, grads); err != nil {
			t.Fatal(err)
		}
	}
	return loss
}

// flatten lists d's present tensors (a tied head once).
func flatten(d *checkpoint.Decoder[[]float32]) [][]float32 {
	out := [][]float32{d.Embed}
	for _, l := range d.Layers {
		out = append(out, l.AttnNorm, l.Q, l.K, l.V, l.O)
		for _, b := range [][]float32{l.QBias, l.KBias, l.VBias, l.OBias} {
			if b != nil {
				out = append(out, b)
			}
		}
		out = append(out, l.MLPNorm, l.Gate, l.Up, l.Down)
	}
	out = append(out, d.FinalNorm)
	if &d.LMHead[0] != &d.Embed[0] {
		out = append(out, d.LMHead)
	}
	return out
}

// TestTrainEngineFiniteDifferences checks every tensor's gradient against
// a central difference of the loss along a random direction.
func TestTrainEngineFiniteDifferences(t *testing.T) {
	tests := []struct {
		name     string
		tweak    func(*checkpoint.Config)
		lens     []int
		segments bool
	}{
		{name: "grouped heads untied padded", lens: []int{9, 5, 1}},
		{name: "tied with biases", tweak: func(c *checkpoint.Config) { c.TieWordEmbeddings, c.AttentionBias = true, true }, lens: []int{7, 7}},
		{name: "qwen2 sliding window", tweak: func(c *checkpoint.Config) {
			c.Architecture, c.ModelType, c.SlidingWindow = checkpoint.ArchQwen2, "qwen2", 3
		}, lens: []int{8, 6}},
		{name: "packed segments", lens: []int{10, 8}, segments: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := smallTrainConfig(t, tt.tweak)
			e, err := NewTrainEngine(cfg, 16)
			if err != nil {
				t.Fatal(err)
			}
			w := randomWeights(t, cfg, 5)
			rng := rand.New(rand.NewPCG(7, 8))
			b := randomBatch(rng, cfg.VocabSize, 10, tt.lens)
			if tt.segments {
				b.Segments = make([]int32, len(b.Tokens))
				for i := range b.Segments {
					b.Segments[i] = int32(i / 4) // sequences of 4 positions
				}
			}
			grads := e.NewGrads()
			trainLoss(t, e, w, b, grads)
			gs := flatten(grads)
			for k, x := range flatten(w) {
				u := randSlice(rng, len(x))
				var analytic float64
				for i := range x {
					analytic += float64(gs[k][i]) * float64(u[i])
				}
				const eps = 2e-3
				orig := append([]float32(nil), x...)
				for i := range x {
					x[i] = orig[i] + eps*u[i]
				}
				up := trainLoss(t, e, w, b, nil)
				for i := range x {
					x[i] = orig[i] - eps*u[i]
				}
				down := trainLoss(t, e, w, b, nil)
				copy(x, orig)
				fd := (up - down) / (2 * eps)
				if d := math.Abs(fd - analytic); d > 1e-2*math.Abs(analytic)+2e-3 {
					t.Errorf("tensor %d: directional derivative %.6g, finite difference %.6g", k, analytic, fd)
				}
			}
		})
	}
}

// TestTrainEngineSegmentsIsolate checks that with segment ids a packed row
// gives each sequence the log-probabilities it has alone in a row of its
// own (positions restart, nothing attends across the boundary).
func TestTrainEngineSegmentsIsolate(t *testing.T) {
	cfg := smallTrainConfig(t, nil)
	e, err := NewTrainEngine(cfg, 16)
	if err != nil {
		t.Fatal(err)
	}
	w := randomWeights(t, cfg, 3)
	rng := rand.New(rand.NewPCG(1, 1))
	alone := randomBatch(rng, cfg.VocabSize, 6, []int{6, 6})
	packed := TrainBatch{Rows: 1, Len: 12, Tokens: alone.Tokens, Targets: alone.Targets, Weights: alone.Weights,
		Segments: []int32{0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1}}
	pa, err := e.Forward(context.Background(), w, alone)
	if err != nil {
		t.Fatal(err)
	}
	pp, err := e.Forward(context.Background(), w, packed)
	if err != nil {
		t.Fatal(err)
	}
	la, lp := pa.Logprobs(), pp.Logprobs()
	for i := range la {
		if math.Abs(la[i]-lp[i]) > 1e-5 {
			t.Fatalf("position %d: log p %v packed, %v alone", i, lp[i], la[i])
		}
	}
}

func TestTrainEngineRefusesBadInput(t *testing.T) {
	cfg := smallTrainConfig(t, nil)
	e, err := NewTrainEngine(cfg, 8)
	if err != nil {
		t.Fatal(err)
	}
	w := randomWeights(t, cfg, 1)
	good := func() TrainBatch { return randomBatch(rand.New(rand.NewPCG(1, 2)), cfg.VocabSize, 8, []int{8}) }
	tests := []struct {
		name    string
		batch   func() TrainBatch
		wantErr error
	}{
		{name: "too long", batch: func() TrainBatch { return randomBatch(rand.New(rand.NewPCG(1, 2)), cfg.VocabSize, 9, []int{9}) }, wantErr: ErrTooLong},
		{name: "token outside vocabulary", batch: func() TrainBatch { b := good(); b.Tokens[3] = 40; return b }, wantErr: ErrInvalidOption},
		{name: "short weights", batch: func() TrainBatch { b := good(); b.Weights = b.Weights[:4]; return b }, wantErr: ErrInvalidOption},
		{name: "short segments", batch: func() TrainBatch { b := good(); b.Segments = []int32{0}; return b }, wantErr: ErrInvalidOption},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := e.Forward(context.Background(), w, tt.batch()); !errors.Is(err, tt.wantErr) {
				t.Fatalf("Forward: %v, want %v", err, tt.wantErr)
			}
		})
	}
	if _, err := NewTrainEngine(cfg, 0); !errors.Is(err, ErrInvalidOption) {
		t.Fatalf("NewTrainEngine(max 0): %v, want %v", err, ErrInvalidOption)
	}
}

// TestTrainEngineFrozenTensors: tensors left nil in the gradients are
// frozen (no gradient computed, no panic), and the gradients of the others
// are exactly those of a pass that computes every one: LoRA's frozen base.
func TestTrainEngineFrozenTensors(t *testing.T) {
	for _, tied := range []bool{false, true} {
		cfg := smallTrainConfig(t, func(c *checkpoint.Config) { c.TieWordEmbeddings, c.AttentionBias = tied, true })
		e, err := NewTrainEngine(cfg, 16)
		if err != nil {
			t.Fatal(err)
		}
		w := randomWeights(t, cfg, 3)
		b := randomBatch(rand.New(rand.NewPCG(1, 2)), cfg.VocabSize, 10, []int{9, 6})
		full, part := e.NewGrads(), e.NewGrads()
		part.Embed, part.LMHead, part.FinalNorm = nil, nil, nil
		for l := range part.Layers {
			lw := &part.Layers[l]
			lw.AttnNorm, lw.MLPNorm, lw.K, lw.Gate, lw.Up, lw.Down, lw.KBias, lw.OBias = nil, nil, nil, nil, nil, nil, nil, nil
		}
		trainLoss(t, e, w, b, full)
		trainLoss(t, e, w, b, part)
		for l := range part.Layers {
			pw, fw := &part.Layers[l], &full.Layers[l]
			for _, pair := range [][2][]float32{{pw.Q, fw.Q}, {pw.V, fw.V}, {pw.O, fw.O}, {pw.QBias, fw.QBias}, {pw.VBias, fw.VBias}} {
				for i := range pair[1] {
					if pair[0][i] != pair[1][i] {
						t.Fatalf("tied %v layer %d: gradient [%d] %v with frozen tensors, %v without", tied, l, i, pair[0][i], pair[1][i])
					}
				}
			}
		}
	}
}

// TestTrainEngineReusesBuffers: a pass that takes the activation buffers
// an earlier pass gave back (dirty, of another batch) computes exactly
// what a fresh engine does.
func TestTrainEngineReusesBuffers(t *testing.T) {
	cfg := smallTrainConfig(t, nil)
	w := randomWeights(t, cfg, 4)
	rng := rand.New(rand.NewPCG(3, 4))
	first, second := randomBatch(rng, cfg.VocabSize, 10, []int{10, 3}), randomBatch(rng, cfg.VocabSize, 10, []int{4, 9})
	fresh, err := NewTrainEngine(cfg, 16)
	if err != nil {
		t.Fatal(err)
	}
	want := fresh.NewGrads()
	wantLoss := trainLoss(t, fresh, w, second, want)
	e, err := NewTrainEngine(cfg, 16)
	if err != nil {
		t.Fatal(err)
	}
	trainLoss(t, e, w, first, e.NewGrads())
	got := e.NewGrads()
	if loss := trainLoss(t, e, w, second, got); loss != wantLoss {
		t.Fatalf("loss %v after a pass gave its buffers back, fresh %v", loss, wantLoss)
	}
	gs := flatten(got)
	for k, x := range flatten(want) {
		for i := range x {
			if gs[k][i] != x[i] {
				t.Fatalf("tensor %d [%d]: %v after a pass gave its buffers back, fresh %v", k, i, gs[k][i], x[i])
			}
		}
	}
}
