package infer_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/largeforge/largeforge/consumers/infer"
	"github.com/largeforge/largeforge/internal/testenv"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

// A model put into lf_models is fetched by name into a cache directory and
// loads; a second fetch keeps the files it has.
func TestModelObjectStore(t *testing.T) {
	ctx := context.Background()
	_, bus := pipelinetest.StartBus(t)
	dir := filepath.Dir(testenv.SharedFile(t, "models/stories260K/model.safetensors"))
	n, err := infer.PutModel(ctx, bus, "stories", dir)
	if err != nil || n < 3 {
		t.Fatalf("PutModel: %d files, %v", n, err)
	}
	cache := t.TempDir()
	got, err := infer.FetchModel(ctx, bus, "stories", cache)
	if err != nil {
		t.Fatal(err)
	}
	m, _, err := infer.Load("stories", got, infer.Config{}, pipelinetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
	st1, _ := os.Stat(filepath.Join(got, "model.safetensors"))
	if _, err := infer.FetchModel(ctx, bus, "stories", cache); err != nil {
		t.Fatal(err)
	}
	st2, _ := os.Stat(filepath.Join(got, "model.safetensors"))
	if !st1.ModTime().Equal(st2.ModTime()) {
		t.Error("an unchanged file was downloaded again")
	}
	if _, err := infer.FetchModel(ctx, bus, "nope", cache); !errors.Is(err, infer.ErrModelNotFound) {
		t.Errorf("missing model: err = %v", err)
	}
}
