package train

import (
	"context"
	"fmt"

	"github.com/largeforge/largeforge/dataset"
	"github.com/largeforge/largeforge/model/train"
	"github.com/largeforge/largeforge/pipeline"
)

// evalRecords is the reader of a job's eval_dataset (a fine-tuning job's
// validation file, stored in lf_artifacts as its training records are),
// or nil when the job names none. bus is whether the bus failed (the job
// is redelivered); otherwise a dataset with no parts is a bad job.
func (w *Worker) evalRecords(ctx context.Context, rc train.RunConfig) (r train.RecordReader, bus bool, err error) {
	if rc.EvalDataset == "" {
		return nil, false, nil
	}
	objects, parts, err := w.datasetParts(ctx, rc.EvalDataset)
	if err != nil {
		return nil, true, err
	}
	if objects == nil {
		return nil, false, fmt.Errorf("%w: eval_dataset %s: no parts in %s", ErrInvalidOption, rc.EvalDataset, pipeline.BucketArtifacts)
	}
	recs, err := dataset.NewRecordsOf(objects, parts, rc.EvalDataset)
	return recs, false, err
}
