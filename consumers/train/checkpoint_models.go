package train

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/rs/zerolog"

	"github.com/largeforge/largeforge/model/train"
	"github.com/largeforge/largeforge/schemas"
	"github.com/largeforge/largeforge/storage/modelstore"
)

// Each checkpoint of a job is a model any infer worker can serve, as
// OpenAI's fine_tuned_model_checkpoint is: once stored in lf_artifacts it
// is pushed to lf_models as CheckpointModel(job, step), its weights,
// tokenizer and trainer state without the optimizer state (for a LoRA job,
// the base with the checkpoint's adapter merged in, as the final model
// is). A pushed checkpoint goes from lf_models when its stored one goes
// (save_total_limit), so lf_models holds no more of a job's checkpoints
// than lf_artifacts. A failed push fails the checkpoint's upload (the job
// goes back to the queue); a failed removal is logged and left.

// CheckpointInfix joins a job id and a checkpoint's step in the lf_models
// name of the checkpoint: <job>-ckpt-step-<step>.
const CheckpointInfix = schemas.CheckpointModelInfix

// CheckpointModel is the lf_models name job's checkpoint of step is pushed
// under (schemas.CheckpointModel, which the gateway names too).
func CheckpointModel(job string, step int) string { return schemas.CheckpointModel(job, step) }

// stageLinks makes a directory of links to files (relative,
// '/'-separated) of dir: the directory a push reads.
func stageLinks(dir string, files []string) (string, error) {
	stage, err := os.MkdirTemp("", "largeforge-push-")
	if err != nil {
		return "", err
	}
	for _, f := range files {
		dst := filepath.Join(stage, filepath.FromSlash(f))
		src, err := filepath.Abs(filepath.Join(dir, filepath.FromSlash(f)))
		if err == nil {
			err = os.MkdirAll(filepath.Dir(dst), 0o755)
		}
		if err == nil {
			err = os.Symlink(src, dst)
		}
		if err != nil {
			os.RemoveAll(stage)
			return "", err
		}
	}
	return stage, nil
}

// pushTrained pushes the model of stage (links to the files of dir) to
// lf_models as name: for a LoRA job (rc.LoRA) dir holds an adapter, and
// the model pushed is rc's base with it merged in.
func pushTrained(ctx context.Context, ms *modelstore.Store, rc train.RunConfig, name, dir, stage string) (modelstore.Manifest, error) {
	model := stage
	if rc.LoRA != nil {
		merged, err := os.MkdirTemp("", "largeforge-merged-")
		if err != nil {
			return modelstore.Manifest{}, err
		}
		defer os.RemoveAll(merged)
		if model, err = mergeFinal(rc.Model(), dir, merged); err != nil {
			return modelstore.Manifest{}, err
		}
	}
	m, err := ms.Push(ctx, name, model)
	if err != nil {
		return m, fmt.Errorf("%w: push %s: %w", errUpload, name, err)
	}
	return m, nil
}

// pushCheckpoint pushes the checkpoint of step, written in dir and stored,
// as CheckpointModel(job, step), then removes the pushed checkpoints of
// the job whose stored checkpoint is gone.
func (w *Worker) pushCheckpoint(ctx context.Context, a artifacts, rc train.RunConfig, dir string, step int, log zerolog.Logger) error {
	files, err := localFiles(dir, false)
	if err != nil {
		return err
	}
	files = slices.DeleteFunc(files, func(f string) bool { return f == train.OptimizerFile })
	stage, err := stageLinks(dir, files)
	if err != nil {
		return err
	}
	defer os.RemoveAll(stage)
	ms, err := modelstore.New(ctx, w.bus)
	if err != nil {
		return fmt.Errorf("%w: %w", errUpload, err)
	}
	name := CheckpointModel(a.job, step)
	if _, err := pushTrained(ctx, ms, rc, name, dir, stage); err != nil {
		return err
	}
	log.Info().Str("model", name).Msg("checkpoint pushed")
	if err := dropCheckpointModels(ctx, ms, a); err != nil {
		log.Warn().Err(err).Msg("pushed checkpoints of removed checkpoints left in lf_models")
	}
	return nil
}

// dropCheckpointModels removes from lf_models the pushed checkpoints of
// a's job whose stored checkpoint is gone, every version of each.
func dropCheckpointModels(ctx context.Context, ms *modelstore.Store, a artifacts) error {
	stored, err := a.checkpoints(ctx)
	if err != nil {
		return err
	}
	models, err := ms.List(ctx)
	if err != nil {
		return err
	}
	for _, m := range models {
		rest, ok := strings.CutPrefix(m.Name, a.job+CheckpointInfix)
		step, err := strconv.Atoi(rest)
		if !ok || err != nil || slices.Contains(stored, step) {
			continue
		}
		for current := m.Digest; current != ""; {
			if _, current, err = ms.Remove(ctx, m.Name); err != nil {
				if errors.Is(err, modelstore.ErrNotFound) {
					break
				}
				return fmt.Errorf("remove %s: %w", m.Name, err)
			}
		}
	}
	return nil
}
