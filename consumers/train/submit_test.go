package train_test

import (
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/largeforge/largeforge/consumers/train"
	"github.com/largeforge/largeforge/consumers/train/traintest"
	"github.com/largeforge/largeforge/schemas"
)

func TestResolvedJobRoundTrip(t *testing.T) {
	fx := traintest.New(t, 2)
	rc, err := train.Resolve(fx.RunConfig(t, "rel/out", 1, 1))
	if err != nil {
		t.Fatal(err)
	}
	if !filepath.IsAbs(rc.Training.OutputDir) || !filepath.IsAbs(rc.BaseModel) {
		t.Fatalf("Resolve left relative paths: %s, %s", rc.Training.OutputDir, rc.BaseModel)
	}
	data, err := schemas.TrainJob{Job: "train_1", Run: rc}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	m, err := schemas.DecodeTrainJob(data)
	if err != nil {
		t.Fatal(err)
	}
	got := m.Run
	if !reflect.DeepEqual(got.Training, rc.Training) || got.BaseModel != rc.BaseModel || got.MaxSeqLength != 64 || got.Training.LearningRate != 0.005 {
		t.Errorf("round trip: %+v", got)
	}
}

// TestResolveModelName: model_name alone selects the base model (made
// absolute); an empty one is "Model name required", one that is no model
// directory "Invalid model path", before anything is queued.
func TestResolveModelName(t *testing.T) {
	fx := traintest.New(t, 2)
	rc := fx.RunConfig(t, t.TempDir(), 1, 1)
	if rc.Training.ModelName != fx.Base || rc.Model() != fx.Base {
		t.Fatalf("model_name %q, Model() %q, want %q", rc.Training.ModelName, rc.Model(), fx.Base)
	}
	if _, err := train.Resolve(rc); err != nil {
		t.Fatalf("model_name alone: %v", err)
	}
	missing := rc.WithModel(filepath.Join(t.TempDir(), "no-such-model"))
	if _, err := train.Resolve(missing); !errors.Is(err, schemas.ErrInvalidModelPath) || !strings.HasPrefix(err.Error(), "Invalid model path") {
		t.Errorf("missing model: err %v, want Invalid model path", err)
	}
	dotdot := rc.WithModel(fx.Base + "/../base")
	if _, err := train.Resolve(dotdot); err == nil || err.Error() != "Invalid model path" {
		t.Errorf("model with ..: err %v, want exactly Invalid model path", err)
	}
	empty := rc.WithModel("")
	if _, err := train.Resolve(empty); err == nil || err.Error() != "Model name required" {
		t.Errorf("empty model: err %v, want exactly Model name required", err)
	}
}
