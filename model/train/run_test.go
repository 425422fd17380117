package train

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"

	"github.com/largeforge/largeforge/dataset"
	"github.com/largeforge/largeforge/model/checkpoint"
	"github.com/largeforge/largeforge/schemas"
)

func TestParseRunConfig(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		wantErr error
	}{
		{name: "dataset", yaml: "base_model: m\ndataset: d\noutput_dir: o\nlearning_rate: 0.001\n"},
		{name: "files", yaml: "method: sft\nbase_model: m\ndata_files: [a.jsonl]\noutput_dir: o\nnum_epochs: 1\n"},
		{name: "lora", yaml: "base_model: m\ndataset: d\noutput_dir: o\nlora:\n  r: 4\n"},
		{name: "bad lora", yaml: "base_model: m\ndataset: d\noutput_dir: o\nlora:\n  r: 0\n", wantErr: schemas.ErrInvalidConfig},
		{name: "dpo not yet", yaml: "method: dpo\nbase_model: m\ndataset: d\noutput_dir: o\n", wantErr: ErrInvalidOption},
		{name: "no data", yaml: "base_model: m\noutput_dir: o\n", wantErr: ErrInvalidOption},
		{name: "both data", yaml: "base_model: m\ndataset: d\ndata_files: [a]\noutput_dir: o\n", wantErr: ErrInvalidOption},
		{name: "no output", yaml: "base_model: m\ndataset: d\n", wantErr: ErrInvalidOption},
		{name: "bad lr", yaml: "base_model: m\ndataset: d\noutput_dir: o\nlearning_rate: 0\n", wantErr: schemas.ErrLearningRateNotPositive},
		{name: "unknown key", yaml: "base_model: m\ndataset: d\noutput_dir: o\nlearnin_rate: 1\n", wantErr: schemas.ErrInvalidConfig},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rc, err := ParseRunConfig([]byte(tc.yaml))
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if rc.Training.ModelName != "m" || rc.Training.PerDeviceBatchSize != 4 || rc.MaxSeqLength != DefaultMaxSeqLen {
				t.Errorf("defaults not applied: %+v", rc)
			}
		})
	}
}

// TestRunFromIngestedDataset trains one step from an ingested dataset's
// Parquet part, as `largeforge train` does.
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
		"\noutput_dir: " + out + "\nnum_epochs: 1\ngradient_accumulation_steps: 1\nmax_seq_length: 160\nlogging_steps: 1\n"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := Run(context.Background(), rc, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if res.GlobalStep != 1 {
		t.Errorf("global step %d, want 1", res.GlobalStep)
	}
	if _, err := checkpoint.Load(out); err != nil {
		t.Errorf("final model: %v", err)
	}
	if _, err := os.Stat(filepath.Join(out, "tokenizer.json")); err != nil {
		t.Error(err)
	}
	rc.Dataset = "missing"
	if _, err := Run(context.Background(), rc, zerolog.Nop()); !errors.Is(err, ErrNoExamples) {
		t.Errorf("missing dataset: err = %v, want ErrNoExamples", err)
	}
}
