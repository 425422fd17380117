package train

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/largeforge/largeforge/model/train"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

// fakeCheckpoint writes dir/checkpoint-<step> with an optimizer state and
// trainer state of its own bytes, and a file in a subdirectory.
func fakeCheckpoint(t *testing.T, dir string, step int) string {
	t.Helper()
	ck := filepath.Join(dir, checkpointName(step))
	for name, data := range map[string]string{
		train.OptimizerFile: "opt " + checkpointName(step), train.TrainerStateFile: `{"global_step":1}`, "sub/extra.txt": "x",
	} {
		p := filepath.Join(ck, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return ck
}

func sameFile(t *testing.T, a, b string) {
	t.Helper()
	x, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := os.ReadFile(b)
	if err != nil || !bytes.Equal(x, y) {
		t.Errorf("%s differs from %s (%v)", b, a, err)
	}
}

// TestStoredCheckpoints: only a checkpoint whose manifest was written is
// restored; a stored one no newer than the newest here is not fetched; a
// file replaced after its manifest is refused and leaves no checkpoint; the
// stored checkpoints the trainer removed here (save_total_limit) are
// removed from the store.
func TestStoredCheckpoints(t *testing.T) {
	_, bus := pipelinetest.StartBus(t)
	ctx := context.Background()
	objs, err := bus.Objects(ctx, pipeline.BucketArtifacts)
	if err != nil {
		t.Fatal(err)
	}
	a := artifacts{objs: objs, job: "train_x"}
	src := t.TempDir()
	ck2 := fakeCheckpoint(t, src, 2)
	if err := a.storeCheckpoint(ctx, ck2, 2); err != nil {
		t.Fatal(err)
	}
	// checkpoint-4's files, but not its manifest: a store cut short.
	ck4 := fakeCheckpoint(t, src, 4)
	for _, f := range []string{train.OptimizerFile, train.TrainerStateFile} {
		if _, err := a.putFile(ctx, filepath.Join(ck4, f), a.key(checkpointName(4), f)); err != nil {
			t.Fatal(err)
		}
	}

	out := filepath.Join(t.TempDir(), "out")
	got, err := a.restore(ctx, out)
	if err != nil || got != filepath.Join(out, "checkpoint-2") {
		t.Fatalf("restore: %q, %v; want checkpoint-2, the only complete one", got, err)
	}
	for _, f := range []string{train.OptimizerFile, train.TrainerStateFile, "sub/extra.txt"} {
		sameFile(t, filepath.Join(ck2, f), filepath.Join(got, f))
	}
	if ents, _ := os.ReadDir(out); len(ents) != 1 {
		t.Errorf("output holds %d entries, want checkpoint-2 alone", len(ents))
	}
	if got, err := a.restore(ctx, out); err != nil || got != "" {
		t.Errorf("restore again: %q, %v; want nothing fetched", got, err)
	}

	// checkpoint-4 stored whole, then a file replaced behind its manifest.
	if err := a.storeCheckpoint(ctx, ck4, 4); err != nil {
		t.Fatal(err)
	}
	if _, err := objs.Put(ctx, a.key(checkpointName(4), train.OptimizerFile), strings.NewReader("tampered")); err != nil {
		t.Fatal(err)
	}
	if got, err := a.restore(ctx, out); !errors.Is(err, pipeline.ErrDigestMismatch) || got != "" {
		t.Errorf("restore of a tampered checkpoint: %q, %v; want ErrDigestMismatch", got, err)
	}
	if cks, _ := train.ListCheckpoints(out); len(cks) != 1 {
		t.Errorf("checkpoints after a refused fetch: %v", cks)
	}
	if ents, _ := os.ReadDir(out); len(ents) != 1 {
		t.Errorf("output holds %d entries after a refused fetch", len(ents))
	}

	// The trainer kept only checkpoint-6 (save_total_limit 1).
	if err := os.RemoveAll(ck2); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(ck4); err != nil {
		t.Fatal(err)
	}
	if err := a.storeCheckpoint(ctx, fakeCheckpoint(t, src, 6), 6); err != nil {
		t.Fatal(err)
	}
	steps, err := a.checkpoints(ctx)
	if err != nil || !slices.Equal(steps, []int{6}) {
		t.Errorf("stored checkpoints %v (%v), want [6]", steps, err)
	}
}

// TestCheckpointIndex: the job's checkpoints are found through its index
// (train/<job>/checkpoints.json), with no listing of lf_artifacts (no
// consumer of its metadata subjects); a job whose checkpoints an older
// trainer stored without an index is listed once and indexed; a checkpoint
// the index names whose manifest is gone is passed over by restore.
func TestCheckpointIndex(t *testing.T) {
	_, bus := pipelinetest.StartBus(t)
	ctx := context.Background()
	objs, err := bus.Objects(ctx, pipeline.BucketArtifacts)
	if err != nil {
		t.Fatal(err)
	}
	var scans atomic.Int32 // consumers created on lf_artifacts' metadata: listings
	for _, subj := range []string{"$JS.API.CONSUMER.CREATE.OBJ_lf_artifacts", "$JS.API.CONSUMER.CREATE.OBJ_lf_artifacts.>"} {
		sub, err := bus.Conn().Subscribe(subj, func(m *nats.Msg) {
			if strings.Contains(m.Subject+string(m.Data), "$O.lf_artifacts.M.") {
				scans.Add(1)
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
	}
	a := artifacts{objs: objs, job: "train_idx"}
	src := t.TempDir()
	// An older trainer's checkpoint-3: files and manifest, no index.
	if _, err := a.store(ctx, fakeCheckpoint(t, src, 3), checkpointName(3), 3, false); err != nil {
		t.Fatal(err)
	}
	if steps, err := a.checkpoints(ctx); err != nil || !slices.Equal(steps, []int{3}) {
		t.Fatalf("checkpoints without an index: %v, %v; want [3]", steps, err)
	}
	if err := bus.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	if scans.Load() == 0 {
		t.Fatal("no listing of lf_artifacts for a job without an index")
	}
	if err := a.storeCheckpoint(ctx, fakeCheckpoint(t, src, 5), 5); err != nil {
		t.Fatal(err)
	}
	scans.Store(0)
	steps, err := a.checkpoints(ctx)
	if err != nil || !slices.Equal(steps, []int{3, 5}) {
		t.Fatalf("checkpoints: %v, %v; want [3 5]", steps, err)
	}
	if err := bus.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	if n := scans.Load(); n != 0 {
		t.Fatalf("%d listings of lf_artifacts with an index, want 0", n)
	}
	// checkpoint-5's manifest removed behind the index (a trainer that died
	// before rewriting it): restore takes checkpoint-3.
	if err := objs.Delete(ctx, a.manifestKey(checkpointName(5))); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "out")
	if got, err := a.restore(ctx, out); err != nil || got != filepath.Join(out, checkpointName(3)) {
		t.Fatalf("restore: %q, %v; want checkpoint-3", got, err)
	}
}
