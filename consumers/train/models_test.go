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
	"github.com/largeforge/largeforge/modelstore"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/schemas"
)

// A job whose model_name names a model pushed to lf_models trains from it:
// the worker fetches it into its model cache (<data-dir>/models). A name
// that is neither a directory nor a pushed model, or holds "..", is
// "Invalid model path" before anything is queued; an empty one "Model name
// required".
func TestTrainingFromPushedModel(t *testing.T) {
	_, bus := pipelinetest.StartBus(t)
	store := jobStore(t, bus)
	fx := traintest.New(t, 4)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ms, err := modelstore.New(ctx, bus)
	if err != nil {
		t.Fatal(err)
	}
	m, err := ms.Push(ctx, "tiny-base", fx.Base)
	if err != nil {
		t.Fatal(err)
	}
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
