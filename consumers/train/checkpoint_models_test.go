package train_test

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/largeforge/largeforge/consumers/train"
	"github.com/largeforge/largeforge/jobs"
	mtrain "github.com/largeforge/largeforge/model/train"
)

// Each stored checkpoint is pushed to lf_models as <job>-ckpt-step-<n>
// (without its optimizer state), and a pushed checkpoint goes when its
// stored one goes (save_total_limit): 4 checkpoints, limit 2, leave steps 3
// and 4 in lf_models beside the job's model.
func TestCheckpointsPushedAsModels(t *testing.T) {
	bus, store, fx, ms, _, ctx := pushedBase(t)
	startWorker(t, bus, "w1", train.Config{DataDir: t.TempDir()})
	rc := fx.RunConfig(t, filepath.Join(fx.Dir, "out"), 2, 1).WithModel("tiny-base")
	rc.Training.SaveTotalLimit = 2
	j, err := train.Submit(ctx, bus, store, rc, "")
	if err != nil {
		t.Fatal(err)
	}
	if end := watch(t, store, j.ID, 60*time.Second).wait(t); end.Status != jobs.StatusCompleted {
		t.Fatalf("job ended %s: %+v", end.Status, end.Errors)
	}
	list, err := ms.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range list {
		if strings.HasPrefix(m.Name, j.ID) {
			names = append(names, m.Name)
		}
	}
	slices.Sort(names)
	if want := []string{j.ID, train.CheckpointModel(j.ID, 3), train.CheckpointModel(j.ID, 4)}; !slices.Equal(names, want) {
		t.Fatalf("lf_models holds %v of the job, want %v", names, want)
	}
	d, err := ms.Resolve(ctx, train.CheckpointModel(j.ID, 3))
	if err != nil {
		t.Fatal(err)
	}
	m, err := ms.Manifest(ctx, train.CheckpointModel(j.ID, 3), d)
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, f := range m.Files {
		files = append(files, f.Path)
	}
	if slices.Contains(files, mtrain.OptimizerFile) || !slices.Contains(files, "model.safetensors") || !slices.Contains(files, "config.json") {
		t.Errorf("the pushed checkpoint holds %v: want its model without %s", files, mtrain.OptimizerFile)
	}
}
