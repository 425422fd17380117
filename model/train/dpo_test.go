package train

import (
	"context"
	"errors"
	"fmt"
	"math"
	"testing"

	"github.com/largeforge/largeforge/model/tokenizer"
	"github.com/largeforge/largeforge/schemas"
)

// TestDPORaisesMargin trains DPO on a toy preference set: the first
// window's margin is 0 (the policy is the reference) and the last one's is
// positive with every pair ranked right.
func TestDPORaisesMargin(t *testing.T) {
	_, ck, tok := tinyBase(t)
	r, err := NewRenderer(tok, 64)
	if err != nil {
		t.Fatal(err)
	}
	var pairs []DPOPair
	for i := range 8 {
		p, _, err := r.RenderDPO(schemas.Record{Format: schemas.FormatDPO, DPO: schemas.DPO{
			Prompt: fmt.Sprintf("Q%d:", i%4), Chosen: "yes", Rejected: "no",
		}})
		if err != nil {
			t.Fatal(err)
		}
		pairs = append(pairs, p)
	}
	cfg := testConfig("")
	cfg.NumEpochs = 8
	cfg.PerDeviceBatchSize = 4
	cfg.GradientAccumulationSteps = 1
	cfg.LearningRate = 5e-3
	cfg.LoggingSteps = 1
	tr, err := New(cfg, ck, WithMaxSeqLen(64))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	res, st, err := tr.TrainDPO(context.Background(), pairs, 0)
	if err != nil {
		t.Fatal(err)
	}
	first := tr.history[0]
	t.Logf("%d steps; first window %v; last: %+v", res.GlobalStep, first, st)
	if m := first["rewards/margins"].(float64); m != 0 {
		t.Errorf("first margin %g, want 0 (policy == reference)", m)
	}
	if st.RewardsMargin < 0.5 || st.RewardsAccuracy != 1 {
		t.Errorf("last window: margin %g, accuracy %g; want margin >= 0.5 and accuracy 1", st.RewardsMargin, st.RewardsAccuracy)
	}
	if _, _, err := r.RenderDPO(syntheticTask(1)[0]); !errors.Is(err, ErrUnsupportedRecord) {
		t.Errorf("alpaca row as DPO: err = %v", err)
	}
}

// dpoPairs are n toy preference pairs.
func dpoPairs(t *testing.T, tok *tokenizer.Tokenizer, n int) []DPOPair {
	t.Helper()
	r, err := NewRenderer(tok, 64)
	if err != nil {
		t.Fatal(err)
	}
	var pairs []DPOPair
	for i := range n {
		p, _, err := r.RenderDPO(schemas.Record{Format: schemas.FormatDPO, DPO: schemas.DPO{
			Prompt: fmt.Sprintf("Q%d:", i%4), Chosen: "yes", Rejected: "no",
		}})
		if err != nil {
			t.Fatal(err)
		}
		pairs = append(pairs, p)
	}
	return pairs
}

// TestNativeDPOMatchesGraph holds DPO on the native engine (policy and
// frozen reference, full and LoRA) to the graph engine: one micro-batch's
// gradients (‖g − g_ref‖/‖g_ref‖ ≤ 1e-4) and loss, then 50 steps' losses
// within 1e-3.
func TestNativeDPOMatchesGraph(t *testing.T) {
	if testing.Short() {
		t.Skip("trains 50 steps twice on each engine")
	}
	_, ck, tok := tinyBase(t)
	pairs := dpoPairs(t, tok, 8)
	for _, lora := range []bool{false, true} {
		t.Run(fmt.Sprintf("lora %v", lora), func(t *testing.T) {
			cfg := testConfig("")
			cfg.PerDeviceBatchSize, cfg.GradientAccumulationSteps, cfg.NumEpochs = 4, 1, 25
			cfg.LearningRate, cfg.LoggingSteps = 5e-3, 1
			var trs [2]*Trainer
			if lora {
				trs = loraPair(t, ck, cfg, schemas.DefaultLoraConfig())
			} else {
				for k, engine := range []string{schemas.TrainEngineGraph, schemas.TrainEngineNative} {
					tr, err := New(cfg, ck, WithEngine(engine), WithMaxSeqLen(32))
					if err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { tr.Close() })
					trs[k] = tr
				}
			}
			g, n := trs[0], trs[1]
			rows := cfg.PerDeviceBatchSize
			b := g.pairBatch(pairs[:3], rows) // a padded slot: its mask is 0
			refv := make([]float32, 2*rows)
			for i := range refv {
				refv[i] = -20 + float32(i)*0.7
			}
			mask := []float32{1, 1, 1, 0}
			acc, gs, err := g.graphDPOMicro(b, refv, mask, 0.1, nil)
			if err != nil {
				t.Fatal(err)
			}
			params, frozen, err := n.nativeValues()
			if err != nil {
				t.Fatal(err)
			}
			ns, err := n.nativeDPOMicro(context.Background(), params, frozen, b, refv, mask, 0.1, 0)
			if err != nil {
				t.Fatal(err)
			}
			for i := range gs {
				if math.Abs(gs[i]-ns[i]) > 1e-5*(1+math.Abs(gs[i])) {
					t.Fatalf("sums (loss, chosen, rejected, correct) native %v, graph %v", ns, gs)
				}
			}
			for i, name := range g.names {
				d, r := diffNorm(n.native.acc[i], floats32(t, acc[i]))
				if d > 1e-4*r && d > 1e-6 {
					t.Errorf("%s: ‖g − g_ref‖ = %.3g, ‖g_ref‖ = %.3g", name, d, r)
				}
			}
			var losses [2][]float64
			for k, tr := range trs {
				if _, _, err := tr.TrainDPO(context.Background(), pairs, 0); err != nil {
					t.Fatal(err)
				}
				for _, h := range tr.history {
					losses[k] = append(losses[k], h["loss"].(float64))
				}
			}
			stepLossesFollow(t, losses[0], losses[1], 0.05)
		})
	}
}
