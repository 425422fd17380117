package train

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/model/train"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/schemas"
)

// Resolve makes rc's paths (model_name and its alias base_model, data_dir,
// data_files, output_dir) absolute, so that a worker started anywhere on
// the machine finds them, and validates it; a model_name that is not a
// model directory is "Invalid model path" (train.CheckModel) before the job
// is queued (ResolveOn also takes the name of a model in lf_models). An
// empty data_dir stays empty: the worker reads a dataset from its own data
// directory (Config.DataDir).
func Resolve(rc train.RunConfig) (train.RunConfig, error) {
	rc, err := resolvePaths(rc)
	if err != nil {
		return rc, err
	}
	model, err := absPath(rc.Model())
	if err != nil {
		return rc, err
	}
	rc = rc.WithModel(model)
	if err := rc.Validate(); err != nil {
		return rc, err
	}
	return rc, train.CheckModel(rc)
}

func absPath(p string) (string, error) {
	if p == "" {
		return "", nil
	}
	a, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("%w: path %s: %w", ErrInvalidOption, p, err)
	}
	return a, nil
}

// resolvePaths validates rc and makes its paths but the model absolute.
func resolvePaths(rc train.RunConfig) (train.RunConfig, error) {
	if err := rc.Validate(); err != nil {
		return rc, err
	}
	var err error
	if rc.DataDir, err = absPath(rc.DataDir); err != nil {
		return rc, err
	}
	if rc.Training.OutputDir, err = absPath(rc.Training.OutputDir); err != nil {
		return rc, err
	}
	files := make([]string, len(rc.DataFiles))
	for i, f := range rc.DataFiles {
		if files[i], err = absPath(f); err != nil {
			return rc, err
		}
	}
	rc.DataFiles = files
	return rc, nil
}

// modelName is the job record's model: the output directory's name, as a
// valid job token.
func modelName(outputDir string) string {
	n := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, filepath.Base(outputDir))
	if len(n) > 128 {
		n = n[:128]
	}
	if strings.Trim(n, "_") == "" {
		return "model"
	}
	return n
}

// Submit records a training job (kind training, status validating) in
// lf_jobs and publishes rc, resolved, on lf.train.<job>; id "" means
// jobs.NewTrainingID(). A job whose message cannot be published is marked
// failed. A worker with --role train takes it from there.
func Submit(ctx context.Context, bus *pipeline.Bus, store *jobs.Store, rc train.RunConfig, id string) (jobs.Job, error) {
	if bus == nil || store == nil {
		return jobs.Job{}, fmt.Errorf("%w: submit needs a bus and a job store", ErrInvalidOption)
	}
	rc, err := ResolveOn(ctx, bus, rc)
	if err != nil {
		return jobs.Job{}, err
	}
	if id == "" {
		id = jobs.NewTrainingID()
	}
	subj, err := pipeline.TrainSubject(id)
	if err != nil {
		return jobs.Job{}, err
	}
	data, err := schemas.TrainJob{Job: id, Run: rc}.Encode()
	if err != nil {
		return jobs.Job{}, err
	}
	input := rc.Dataset
	if input == "" {
		input = strings.Join(rc.DataFiles, ",")
	}
	j, err := store.Create(ctx, jobs.Spec{ID: id, Kind: jobs.KindTraining, Model: modelName(rc.Training.OutputDir), InputFile: input})
	if err != nil {
		return jobs.Job{}, err
	}
	if _, err := bus.Publish(ctx, subj, data, id, nil); err != nil {
		_, _ = store.Fail(context.WithoutCancel(ctx), id, jobs.ErrorReport{Code: "submit_failed", Message: err.Error()})
		return j, fmt.Errorf("submit training job %s: %w", id, err)
	}
	return j, nil
}
