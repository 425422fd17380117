package train

import (
	"context"
	"errors"
	"testing"

	"github.com/largeforge/largeforge/schemas"
)

type fixedRecords []schemas.Record

func (f fixedRecords) ReadRecords(context.Context) ([]schemas.Record, error) { return f, nil }

// Run takes eval records exactly when the run names an eval_dataset, never
// beside an eval_split or in a dpo run; all is checked before a model loads.
func TestRunEvalRecordsChecked(t *testing.T) {
	rc, err := ParseRunConfig([]byte("base_model: " + t.TempDir() + "\ndataset: d\noutput_dir: o\neval_split: 0\n"))
	if err != nil {
		t.Fatal(err)
	}
	recs := fixedRecords{}
	for _, c := range []struct {
		name string
		edit func(*RunConfig)
		opt  []Option
	}{
		{"eval dataset without records", func(rc *RunConfig) { rc.EvalDataset = "v" }, nil},
		{"records beside a split", func(rc *RunConfig) { rc.EvalSplit = 0.1 }, []Option{WithEvalRecords(recs)}},
		{"records in a dpo run", func(rc *RunConfig) { rc.Method = "dpo" }, []Option{WithEvalRecords(recs)}},
	} {
		r := rc
		c.edit(&r)
		if err := checkEvalRecords(r, optsEval(t, c.opt)); !errors.Is(err, ErrInvalidOption) {
			t.Errorf("%s: %v, want ErrInvalidOption", c.name, err)
		}
	}
	if err := WithEvalRecords(nil)(&options{}); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("nil reader: %v", err)
	}
}

func optsEval(t *testing.T, opts []Option) RecordReader {
	var o options
	for _, op := range opts {
		if err := op(&o); err != nil {
			t.Fatal(err)
		}
	}
	return o.evalRecords
}
