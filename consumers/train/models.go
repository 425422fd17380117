package train

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/rs/zerolog"

	"github.com/largeforge/largeforge/logging"
	"github.com/largeforge/largeforge/model/train"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/schemas"
	"github.com/largeforge/largeforge/storage/modelstore"
)

// storedModel reports whether rc's model_name is the name of a model in
// lf_models rather than a directory: a valid model name with no directory
// of that name here.
func storedModel(rc train.RunConfig) (string, bool) {
	name := rc.Model()
	if modelstore.ValidName(name) != nil {
		return "", false
	}
	if st, err := os.Stat(name); err == nil && st.IsDir() {
		return "", false
	}
	return name, true
}

// ResolveOn is Resolve for a job queued on bus: a model_name that names a
// model pushed to lf_models (`largeforge model push`) stays that name, its
// current version is pinned (model_digest), and the train worker fetches
// that version; one that is neither such a model nor a model
// directory is "Invalid model path".
func ResolveOn(ctx context.Context, bus *pipeline.Bus, rc train.RunConfig) (train.RunConfig, error) {
	name, ok := storedModel(rc)
	if !ok {
		return Resolve(rc)
	}
	if err := rc.Validate(); err != nil {
		return rc, err
	}
	ms, err := modelstore.New(ctx, bus)
	if err != nil {
		return rc, err
	}
	digest := rc.ModelDigest
	if digest != "" { // pinned already: the version must still be there
		_, err = ms.Manifest(ctx, name, digest)
	} else {
		digest, err = ms.Resolve(ctx, name)
	}
	if err != nil {
		if errors.Is(err, modelstore.ErrNotFound) || errors.Is(err, modelstore.ErrNoManifest) || errors.Is(err, modelstore.ErrCorrupt) {
			return rc, fmt.Errorf("%w: %s is neither a model directory nor a model in lf_models: %w", schemas.ErrInvalidModelPath, name, err)
		}
		return rc, fmt.Errorf("model_name %s: %w", name, err)
	}
	rc.ModelDigest = digest // a later push does not change the job
	return resolvePaths(rc) // the name stays: each worker fetches it into its own cache
}

// fetchModel makes a job whose model_name names a model of lf_models train
// from the version pinned at submit (model_digest; the current one for a
// job without), fetched (verified) into the worker's model cache; a
// directory stays as it is.
func (w *Worker) fetchModel(ctx context.Context, rc train.RunConfig, log zerolog.Logger) (train.RunConfig, error) {
	name, ok := storedModel(rc)
	if !ok {
		return rc, nil
	}
	if w.cfg.ModelCache == "" {
		return rc, fmt.Errorf("%w: model_name %s is a model of lf_models and worker %s has no model cache (--data-dir)", schemas.ErrInvalidModelPath, name, w.ID)
	}
	ms, err := modelstore.New(ctx, w.bus)
	if err != nil {
		return rc, err
	}
	dir, digest := "", rc.ModelDigest
	if digest != "" {
		dir, err = ms.FetchVersion(ctx, name, digest, w.cfg.ModelCache)
	} else { // queued before jobs were pinned
		dir, digest, err = ms.Fetch(ctx, name, w.cfg.ModelCache)
	}
	switch {
	case errors.Is(err, modelstore.ErrNotFound) || errors.Is(err, modelstore.ErrNoManifest) || errors.Is(err, modelstore.ErrCorrupt):
		return rc, fmt.Errorf("%w: model_name %s: %w", schemas.ErrInvalidModelPath, name, err)
	case err != nil:
		return rc, fmt.Errorf("model_name %s: %w", name, err) // the bus: retried
	}
	log.Info().Dict("context", logging.Ctx().Str("model", name).Str("digest", digest).Str("dir", dir)).Msg("base model fetched from lf_models")
	return rc.WithModel(dir), nil
}
