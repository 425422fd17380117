package train_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/largeforge/largeforge/consumers/train"
	"github.com/largeforge/largeforge/consumers/train/traintest"
	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/schemas"
	"github.com/largeforge/largeforge/storage/modelstore"
)

// A job whose model_name names a model pushed to lf_models trains from it:
// the worker fetches it into its model cache (<data-dir>/models). A name
// that is neither a directory nor a pushed model, or holds "..", is
// "Invalid model path" before anything is queued; an empty one "Model name
// required".
func TestTrainingFromPushedModel(t *testing.T) {
	bus, store, fx, _, m, ctx := pushedBase(t)
	dataDir := t.TempDir()
	startWorker(t, bus, "w1", train.Config{DataDir: dataDir})

	out := filepath.Join(fx.Dir, "out")
	rc := fx.RunConfig(t, out, 1, 100).WithModel("tiny-base")
	j, err := train.Submit(ctx, bus, store, rc, "")
	if err != nil {
		t.Fatal(err)
	}
	end := watch(t, store, j.ID, 60*time.Second).wait(t)
	if end.Status != jobs.StatusCompleted {
		t.Fatalf("job ended %s: %+v", end.Status, end.Errors)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "models", "tiny-base", m.Digest, "model.safetensors")); err != nil {
		t.Fatalf("the pushed model in the worker's cache: %v", err)
	}
	if _, err := os.Stat(filepath.Join(out, "model.safetensors")); err != nil {
		t.Fatalf("trained model: %v", err)
	}

	for _, tt := range []struct {
		name, model, want string
	}{
		{"unknown name", "no-such-model", "Invalid model path"},
		{"dot dot", fx.Base + "/../base", "Invalid model path"},
		{"missing directory", filepath.Join(t.TempDir(), "none"), "Invalid model path"},
		{"empty", "", "Model name required"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := train.Submit(ctx, bus, store, rc.WithModel(tt.model), "")
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
				t.Fatalf("model_name %q: %v, want %s", tt.model, err, tt.want)
			}
			if tt.want == "Invalid model path" && !errors.Is(err, schemas.ErrInvalidModelPath) {
				t.Fatalf("%v does not wrap ErrInvalidModelPath", err)
			}
		})
	}
}

// A job pins the version its model_name named at submit (model_digest): a
// push after the submit does not change what the worker fetches and trains
// from.
func TestTrainingPinsPushedModel(t *testing.T) {
	bus, store, fx, ms, v1, ctx := pushedBase(t)
	rc, err := train.ResolveOn(ctx, bus, fx.RunConfig(t, filepath.Join(fx.Dir, "out"), 1, 100).WithModel("tiny-base"))
	if err != nil || rc.ModelDigest != v1.Digest {
		t.Fatalf("resolved model_digest %q (%v), want %s", rc.ModelDigest, err, v1.Digest)
	}
	j, err := train.Submit(ctx, bus, store, rc, "")
	if err != nil {
		t.Fatal(err)
	}
	// A second version, current before any worker takes the job.
	v2dir := t.TempDir()
	if err := os.CopyFS(v2dir, os.DirFS(fx.Base)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(v2dir, "README.md"), []byte("v2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	v2, err := ms.Push(ctx, "tiny-base", v2dir)
	if err != nil || v2.Digest == v1.Digest {
		t.Fatalf("push v2: %v (digest %s)", err, v2.Digest)
	}
	dataDir := t.TempDir()
	startWorker(t, bus, "w1", train.Config{DataDir: dataDir})
	end := watch(t, store, j.ID, 60*time.Second).wait(t)
	if end.Status != jobs.StatusCompleted {
		t.Fatalf("job ended %s: %+v", end.Status, end.Errors)
	}
	cache := filepath.Join(dataDir, "models", "tiny-base")
	if _, err := os.Stat(filepath.Join(cache, v1.Digest, "model.safetensors")); err != nil {
		t.Fatalf("the pinned version is not in the worker's cache: %v", err)
	}
	if _, err := os.Stat(filepath.Join(cache, v2.Digest)); !os.IsNotExist(err) {
		t.Fatalf("the worker fetched the version pushed after the submit: %v", err)
	}
	// A pin to a version that is gone is refused at submit.
	if _, _, err := ms.Remove(ctx, "tiny-base"); err != nil {
		t.Fatal(err)
	}
	rc.ModelDigest = v2.Digest
	if _, err := train.Submit(ctx, bus, store, rc, ""); !errors.Is(err, schemas.ErrInvalidModelPath) {
		t.Fatalf("submit pinned to a removed version: %v", err)
	}
}

// pushedBase is a bus with its job store, a training fixture whose base
// model is pushed to lf_models as tiny-base, and a context for two minutes.
func pushedBase(t *testing.T) (*pipeline.Bus, *jobs.Store, traintest.Fixture, *modelstore.Store, modelstore.Manifest, context.Context) {
	t.Helper()
	_, bus := pipelinetest.StartBus(t)
	store := jobStore(t, bus)
	fx := traintest.New(t, 4)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	ms, err := modelstore.New(ctx, bus)
	if err != nil {
		t.Fatal(err)
	}
	m, err := ms.Push(ctx, "tiny-base", fx.Base)
	if err != nil {
		t.Fatal(err)
	}
	return bus, store, fx, ms, m, ctx
}
