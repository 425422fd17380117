package train

import (
	"context"
	"errors"
	"fmt"
	"testing"

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
