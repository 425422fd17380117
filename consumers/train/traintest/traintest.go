// Package traintest writes the fixtures of training-job tests: a freshly
// initialised tiny base model, a few synthetic chat rows, and a
// train.yaml small enough to run in a second or two on one core.
package traintest

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/largeforge/largeforge/model/checkpoint"
	"github.com/largeforge/largeforge/model/train"
)

// Fixture is a base model and a data file in a test's temporary directory.
type Fixture struct {
	Dir  string // the temporary directory
	Base string // the tiny base model
	Data string // chat.jsonl
}

// New writes the "tiny" preset (seed 7) and rows synthetic one-turn
// ShareGPT conversations (question, one-word answer): rendered with ChatML
// by the byte-level tokenizer they fit in 64 tokens, where the Alpaca
// template alone takes 140, which keeps a training step cheap.
func New(t testing.TB, rows int) Fixture {
	t.Helper()
	dir := t.TempDir()
	f := Fixture{Dir: dir, Base: filepath.Join(dir, "base"), Data: filepath.Join(dir, "chat.jsonl")}
	if err := checkpoint.Init("tiny", 7, f.Base); err != nil {
		t.Fatal(err)
	}
	answers := []string{"red", "blue", "green", "gold"}
	out, err := os.Create(f.Data)
	if err != nil {
		t.Fatal(err)
	}
	enc := json.NewEncoder(out)
	for i := range rows {
		row := map[string]any{"conversations": []map[string]string{
			{"from": "human", "value": fmt.Sprintf("Colour %d?", i%len(answers))},
			{"from": "gpt", "value": answers[i%len(answers)]},
		}}
		if err := enc.Encode(row); err != nil {
			t.Fatal(err)
		}
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return f
}

// YAML is a train.yaml for the fixture: SFT, batch 2 without accumulation
// (so rows/2 steps per epoch), logging every step, a checkpoint every
// saveSteps, writing to outputDir; no evaluation (eval_split 0).
func (f Fixture) YAML(outputDir string, epochs, saveSteps int) string {
	return fmt.Sprintf(`method: sft
model_name: %s
data_files: [%s]
max_seq_length: 64
output_dir: %s
num_epochs: %d
per_device_batch_size: 2
gradient_accumulation_steps: 1
learning_rate: 0.005
lr_scheduler_type: linear
warmup_ratio: 0
logging_steps: 1
save_steps: %d
save_total_limit: 0
eval_steps: 100000
eval_split: 0
bf16: false
`, f.Base, f.Data, outputDir, epochs, saveSteps)
}

// RunConfig parses YAML(outputDir, epochs, saveSteps).
func (f Fixture) RunConfig(t testing.TB, outputDir string, epochs, saveSteps int) train.RunConfig {
	t.Helper()
	rc, err := train.ParseRunConfig([]byte(f.YAML(outputDir, epochs, saveSteps)))
	if err != nil {
		t.Fatal(err)
	}
	return rc
}

// LogHistory reads the log_history of dir/trainer_state.json.
func LogHistory(t testing.TB, dir string) []map[string]any {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, train.TrainerStateFile))
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		LogHistory []map[string]any `json:"log_history"`
	}
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatal(err)
	}
	return st.LogHistory
}

// StepLosses reads the per-step training losses of dir/trainer_state.json's
// log_history (logging_steps 1 logs every step), keyed by step.
func StepLosses(t testing.TB, dir string) map[int]float64 {
	t.Helper()
	out := map[int]float64{}
	for _, e := range LogHistory(t, dir) {
		loss, ok := e["loss"].(float64)
		step, ok2 := e["step"].(float64)
		if ok && ok2 {
			out[int(step)] = loss
		}
	}
	return out
}

// SameTraining fails the test unless got's final model and per-step losses
// equal want's within tol (both output directories of finished runs).
func SameTraining(t testing.TB, want, got string, tol float64) {
	t.Helper()
	wl, gl := StepLosses(t, want), StepLosses(t, got)
	if len(wl) == 0 || len(wl) != len(gl) {
		t.Fatalf("logged steps: %d uninterrupted, %d resumed", len(wl), len(gl))
	}
	for s, l := range wl {
		if d := math.Abs(l - gl[s]); !(d <= tol) {
			t.Errorf("step %d: loss %v resumed, %v uninterrupted (diff %g)", s, gl[s], l, d)
		}
	}
	SameWeights(t, want, got, tol)
}

// SameWeights fails the test unless the checkpoint in got has every tensor
// of want's, each within tol of it.
func SameWeights(t testing.TB, want, got string, tol float64) {
	t.Helper()
	a, err := checkpoint.Load(want)
	if err != nil {
		t.Fatal(err)
	}
	b, err := checkpoint.Load(got)
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Tensors) != len(b.Tensors) {
		t.Fatalf("%s has %d tensors, %s %d", got, len(b.Tensors), want, len(a.Tensors))
	}
	worst := 0.0
	for n, x := range a.Tensors {
		y := b.Tensors[n]
		if y == nil || len(y.Data) != len(x.Data) {
			t.Fatalf("tensor %s missing or resized in %s", n, got)
		}
		for i, v := range x.Data {
			worst = math.Max(worst, math.Abs(float64(v-y.Data[i])))
		}
	}
	if worst > tol {
		t.Errorf("final weights differ by up to %g (tolerance %g)", worst, tol)
	}
}
