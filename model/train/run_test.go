package train

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/largeforge/largeforge/dataset"
	"github.com/largeforge/largeforge/model/checkpoint"
	"github.com/largeforge/largeforge/schemas"
	"github.com/largeforge/largeforge/storage"
)

// TestRunFromIngestedDataset trains one step from an ingested dataset's
// Parquet part, read by the dataset's RecordReader as `largeforge train`
// hands it one.
func TestRunFromIngestedDataset(t *testing.T) {
	base, _, _ := tinyBase(t)
	dataDir := t.TempDir()
	recs := syntheticTask(4)
	ids := []string{"a", "b", "c", "d"}
	part := filepath.Join(dataDir, "datasets", "colours", dataset.PartName(0))
	if err := os.MkdirAll(filepath.Dir(part), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := dataset.WritePart(part, schemas.FormatAlpaca, recs, ids, nil); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "out")
	rc, err := ParseRunConfig([]byte("base_model: " + base + "\ndataset: colours\ndata_dir: " + dataDir +
		"\noutput_dir: " + out + "\nnum_epochs: 1\ngradient_accumulation_steps: 1\nmax_seq_length: 160\nlogging_steps: 1\neval_split: 0.25\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Run(context.Background(), rc, zerolog.Nop()); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("a dataset without a reader: err = %v, want ErrInvalidOption", err)
	}
	store, err := storage.NewLocal(storage.DirsUnder(dataDir))
	if err != nil {
		t.Fatal(err)
	}
	records := func(name string) Option {
		r, err := dataset.NewRecords(store, name)
		if err != nil {
			t.Fatal(err)
		}
		return WithRecords(r)
	}
	res, err := Run(context.Background(), rc, zerolog.Nop(), records("colours"))
	if err != nil {
		t.Fatal(err)
	}
	if res.GlobalStep != 1 {
		t.Errorf("global step %d, want 1", res.GlobalStep)
	}
	if res.Eval == nil || res.Eval.Tokens == 0 || res.Eval.Perplexity <= 1 {
		t.Errorf("eval after the last step: %+v", res.Eval)
	}
	if _, err := checkpoint.Load(out); err != nil {
		t.Errorf("final model: %v", err)
	}
	if _, err := os.Stat(filepath.Join(out, "tokenizer.json")); err != nil {
		t.Error(err)
	}
	rc.Dataset = "missing"
	if _, err := Run(context.Background(), rc, zerolog.Nop(), records("missing")); !errors.Is(err, ErrNoExamples) {
		t.Errorf("missing dataset: err = %v, want ErrNoExamples", err)
	}
}

// TestRunEvaluatesByDefault: a train.yaml without eval_split holds out
// DefaultEvalSplit and evaluates it every eval_steps; the §5.2 gauges are
// set by the evaluations (TestSFTLowersLossAndSaves: absent without); fp16 alone is accepted
// and the float32 note is logged once; optim sgd with a plateau schedule
// trains.
func TestRunEvaluatesByDefault(t *testing.T) {
	base, _, _ := tinyBase(t)
	data := alpacaJSONL(t, 20)
	out := filepath.Join(t.TempDir(), "out")
	rc, err := ParseRunConfig([]byte("model_name: " + base + "\ndata_files: [" + data + "]\noutput_dir: " + out +
		"\nnum_epochs: 1\nper_device_batch_size: 6\ngradient_accumulation_steps: 1\nmax_seq_length: 160\nlogging_steps: 1" +
		"\neval_steps: 1\nfp16: true\noptim: sgd\nlearning_rate: 0.01\nlr_scheduler_type: reduce_lr_on_plateau\n" +
		"lr_scheduler_kwargs: {patience: 0, factor: 0.5, threshold: 10}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if rc.EvalSplit != DefaultEvalSplit || rc.Training.BF16 || !rc.Training.FP16 {
		t.Fatalf("eval_split %v, bf16 %v, fp16 %v", rc.EvalSplit, rc.Training.BF16, rc.Training.FP16)
	}
	reg := prometheus.NewRegistry()
	var logs bytes.Buffer
	res, err := Run(context.Background(), rc, zerolog.New(&logs), WithRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	// 20 records, 2 held out: 18 / 6 = 3 steps, each evaluated.
	if res.GlobalStep != 3 || res.Eval == nil || res.Eval.Tokens == 0 {
		t.Fatalf("global step %d, eval %+v", res.GlobalStep, res.Eval)
	}
	if n := strings.Count(logs.String(), "computes in float32"); n != 1 {
		t.Errorf("float32 note logged %d times, want once:\n%s", n, logs.String())
	}
	if n := strings.Count(logs.String(), `"message":"eval"`); n != 3 {
		t.Errorf("%d evaluations logged, want 3 (eval_steps 1)", n)
	}
	if !strings.Contains(logs.String(), "learning rate reduced on plateau") {
		t.Errorf("reduce_lr_on_plateau never reduced the rate with threshold 10:\n%s", logs.String())
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		got[mf.GetName()] = mf.GetMetric()[0].GetGauge().GetValue()
	}
	for _, n := range []string{"eval_loss", "perplexity", "accuracy"} {
		if _, ok := got[n]; !ok {
			t.Errorf("gauge %s absent after evaluations", n)
		}
	}
	if got["eval_loss"] != res.Eval.Loss {
		t.Errorf("eval_loss gauge %v, last evaluation %v", got["eval_loss"], res.Eval.Loss)
	}
}

func TestSplitEval(t *testing.T) {
	exs := make([]Example, 10)
	for i := range exs {
		exs[i] = Example{Tokens: []int32{int32(i)}}
	}
	tests := []struct {
		name      string
		frac      float64
		wantEval  int
		wantTrain int
	}{
		{name: "none", frac: 0, wantEval: 0, wantTrain: 10},
		{name: "fifth", frac: 0.2, wantEval: 2, wantTrain: 8},
		{name: "tiny fraction holds one", frac: 0.01, wantEval: 1, wantTrain: 9},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr, ev := SplitEval(exs, tc.frac, 3)
			if len(tr) != tc.wantTrain || len(ev) != tc.wantEval {
				t.Fatalf("train %d eval %d, want %d and %d", len(tr), len(ev), tc.wantTrain, tc.wantEval)
			}
			seen := map[int32]bool{}
			for _, e := range append(append([]Example{}, tr...), ev...) {
				if seen[e.Tokens[0]] {
					t.Fatalf("example %d in both sets", e.Tokens[0])
				}
				seen[e.Tokens[0]] = true
			}
			tr2, _ := SplitEval(exs, tc.frac, 3)
			if len(tr2) != len(tr) || (len(tr) > 0 && tr2[0].Tokens[0] != tr[0].Tokens[0]) {
				t.Error("split is not deterministic")
			}
		})
	}
}
