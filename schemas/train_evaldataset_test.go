package schemas

import (
	"errors"
	"testing"
)

// An eval_dataset (a fine-tuning job's validation file) rides on the
// training job's message and is checked there: a valid name, an sft run
// over a dataset, eval_split 0; it also satisfies reduce_lr_on_plateau.
func TestRunConfigEvalDataset(t *testing.T) {
	base, err := ParseRunConfig([]byte("base_model: m\ndataset: d\noutput_dir: o\neval_split: 0\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name    string
		edit    func(*RunConfig)
		wantErr error
	}{
		{"eval dataset", func(rc *RunConfig) { rc.EvalDataset = "d-validation" }, nil},
		{"plateau", func(rc *RunConfig) {
			rc.EvalDataset, rc.Training.LRSchedulerType = "d-validation", "reduce_lr_on_plateau"
		}, nil},
		{"bad name", func(rc *RunConfig) { rc.EvalDataset = "../x" }, ErrInvalidDatasetName},
		{"with a split", func(rc *RunConfig) { rc.EvalDataset, rc.EvalSplit = "v", 0.1 }, ErrInvalidConfig},
		{"dpo", func(rc *RunConfig) { rc.EvalDataset, rc.Method = "v", "dpo" }, ErrInvalidConfig},
		{"data files", func(rc *RunConfig) { rc.EvalDataset, rc.Dataset, rc.DataFiles = "v", "", []string{"a.jsonl"} }, ErrInvalidConfig},
	} {
		t.Run(c.name, func(t *testing.T) {
			rc := base
			c.edit(&rc)
			data, err := TrainJob{Job: "j1", Run: rc}.Encode()
			if err != nil {
				t.Fatal(err)
			}
			got, err := DecodeTrainJob(data)
			if !errors.Is(err, c.wantErr) {
				t.Fatalf("DecodeTrainJob: %v, want %v", err, c.wantErr)
			}
			if err == nil && got.Run.EvalDataset != rc.EvalDataset {
				t.Errorf("eval_dataset %q after the wire, want %q", got.Run.EvalDataset, rc.EvalDataset)
			}
		})
	}
	if _, err := ParseRunConfig([]byte("base_model: m\ndataset: d\noutput_dir: o\neval_dataset: v\n")); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("eval_dataset in a train.yaml: %v, want ErrInvalidConfig (not a train.yaml key)", err)
	}
}
