package gateway

import (
	"bytes"
	"context"
	"errors"

	"github.com/largeforge/largeforge/schemas"
)

// ValidationSuffix ends the name of a fine-tuning job's eval dataset: the
// records of its validation_file, stored as datasets/<job>-validation/ in
// lf_artifacts beside the training records (datasets/<job>/).
const ValidationSuffix = "-validation"

// fineTuneFile is the file object of id, which param names: a 400 naming
// param when there is no such file or its purpose is not fine-tune.
func (ft *fineTuning) fineTuneFile(ctx context.Context, param, id string) (FileObject, error) {
	fo, err := ft.files.lookup(ctx, id)
	switch {
	case errors.Is(err, ErrNoFile):
		return fo, bad(param, "invalid_file", "%v", err)
	case err != nil:
		return fo, err
	case fo.Purpose != "fine-tune":
		return fo, bad(param, "invalid_file", "File %s has purpose %q, want fine-tune", fo.ID, fo.Purpose)
	}
	return fo, nil
}

// validation checks the request's validation_file, when it has one, as the
// training file is, and returns its records' part (to store as the job's
// eval dataset) with rc evaluating on it instead of a held-out eval_split.
// A dpo job runs no evaluation: its validation_file is a 400.
func (ft *fineTuning) validation(ctx context.Context, req fineTuningRequest, id string, rc schemas.RunConfig) (schemas.RunConfig, *bytes.Buffer, error) {
	if req.ValidationFile == nil || *req.ValidationFile == "" {
		return rc, nil, nil
	}
	if rc.Method == "dpo" {
		return rc, nil, bad("validation_file", "invalid_value", "A dpo job runs no evaluation: give validation_file with method supervised only")
	}
	fo, err := ft.fineTuneFile(ctx, "validation_file", *req.ValidationFile)
	if err != nil {
		return rc, nil, err
	}
	part, _, err := ft.checkDataset(ctx, "validation_file", fo.ID, rc.Method)
	if err != nil {
		return rc, nil, err
	}
	rc.EvalDataset, rc.EvalSplit = id+ValidationSuffix, 0
	if err := rc.Validate(); err != nil {
		return rc, nil, bad("validation_file", "invalid_value", "Invalid validation_file: %v", err)
	}
	return rc, part, nil
}
