package train

import (
	"context"
	"fmt"
)

// WithEvalRecords hands Run the reader of its evaluation records (a
// fine-tuning job's validation file, stored as the run's eval_dataset):
// they are rendered as the training records are and evaluated every
// eval_steps and at the last step, and every training record is trained
// on (no eval_split is held out). New ignores it.
func WithEvalRecords(r RecordReader) Option {
	return func(o *options) error {
		if r == nil {
			return fmt.Errorf("%w: nil eval record reader", ErrInvalidOption)
		}
		o.evalRecords = r
		return nil
	}
}

// checkEvalRecords checks, before anything is loaded, that a run has an
// eval record reader exactly when it names an eval_dataset, and that such
// a run holds out no eval_split of its training data.
func checkEvalRecords(rc RunConfig, r RecordReader) error {
	switch {
	case rc.EvalDataset != "" && r == nil:
		return fmt.Errorf("%w: eval_dataset %s: no eval RecordReader (WithEvalRecords)", ErrInvalidOption, rc.EvalDataset)
	case r != nil && rc.EvalSplit != 0:
		return fmt.Errorf("%w: eval records given and eval_split %v: evaluate on one or the other", ErrInvalidOption, rc.EvalSplit)
	case r != nil && rc.Method == "dpo":
		return fmt.Errorf("%w: eval records given to a dpo run, which runs no evaluation", ErrInvalidOption)
	}
	return nil
}

// renderEvalRecords reads and renders the eval records: the eval set, with
// every training example kept for training.
func renderEvalRecords(ctx context.Context, r *Renderer, exs []Example, er RecordReader) (train, eval []Example, err error) {
	recs, err := er.ReadRecords(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("read the eval records: %w", err)
	}
	if len(recs) == 0 {
		return nil, nil, fmt.Errorf("%w: eval records %v hold none", ErrNoExamples, er)
	}
	eval, _, err = r.RenderAll(recs)
	if err != nil {
		return nil, nil, fmt.Errorf("eval records: %w", err)
	}
	return exs, eval, nil
}
