package train_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/largeforge/largeforge/consumers/train"
	"github.com/largeforge/largeforge/consumers/train/traintest"
	"github.com/largeforge/largeforge/jobs"
	mtrain "github.com/largeforge/largeforge/model/train"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/schemas"
	"github.com/largeforge/largeforge/storage/modelstore"
)

// storedObjects lists the keys of lf_artifacts under prefix.
func storedObjects(t *testing.T, bus *pipeline.Bus, prefix string) []string {
	t.Helper()
	objs, err := bus.Objects(context.Background(), pipeline.BucketArtifacts)
	if err != nil {
		t.Fatal(err)
	}
	all, err := objs.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, in := range all {
		if strings.HasPrefix(in.Name, prefix) {
			out = append(out, in.Name)
		}
	}
	return out
}

// trainEvents reads every event of lf.events.train.<job> from LF_EVENTS.
func trainEvents(t *testing.T, bus *pipeline.Bus, job string) []schemas.TrainEvent {
	t.Helper()
	ctx := context.Background()
	subj, err := pipeline.TrainEventSubject(job)
	if err != nil {
		t.Fatal(err)
	}
	c, err := bus.JetStream().OrderedConsumer(ctx, pipeline.StreamEvents, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subj}})
	if err != nil {
		t.Fatal(err)
	}
	var out []schemas.TrainEvent
	for {
		b, err := c.FetchNoWait(500)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range b.Messages() {
			n++
			ev, err := schemas.DecodeTrainEvent(m.Data())
			if err != nil {
				t.Fatalf("event %s: %v", m.Data(), err)
			}
			out = append(out, ev)
		}
		if n == 0 {
			return out
		}
	}
}

// TestResumeOnAnotherMachine: worker A, its output under a root of its own,
// stores each checkpoint in lf_artifacts and is stopped once one is stored;
// its local output is then deleted (its machine is gone). Worker B, with
// another data dir and output root, fetches the newest stored checkpoint,
// resumes and finishes: losses and final weights equal an uninterrupted
// run's. The final output is stored under train/<job>/final, the trained
// model is pushed to lf_models under the name the job reports (a pull is
// byte-equal to B's output), and every step and evaluation is an event on
// lf.events.train.<job>.
func TestResumeOnAnotherMachine(t *testing.T) {
	_, bus := pipelinetest.StartBus(t)
	store := jobStore(t, bus)
	fx := traintest.New(t, 8)
	const epochs, save = 3, 2 // 6 training rows, 3 steps an epoch: 9 steps
	config := func(out string) mtrain.RunConfig {
		rc := fx.RunConfig(t, out, epochs, save)
		rc.EvalSplit, rc.Training.EvalSteps = 0.25, 2
		return rc
	}
	ref := filepath.Join(fx.Dir, "ref")
	if _, err := mtrain.Run(context.Background(), config(ref), pipelinetest.Logger(t)); err != nil {
		t.Fatal(err)
	}

	rootA, rootB := filepath.Join(fx.Dir, "a", "out"), filepath.Join(fx.Dir, "b", "out")
	stopA := startWorker(t, bus, "a", train.Config{DrainTimeout: time.Millisecond, OutputRoot: rootA, DataDir: filepath.Join(fx.Dir, "a", "data")})
	j, err := train.Submit(context.Background(), bus, store, config(filepath.Join(fx.Dir, "submitted")), "")
	if err != nil {
		t.Fatal(err)
	}
	w := watch(t, store, j.ID, 2*time.Minute)
	prefix := train.JobArtifacts(j.ID)
	pipelinetest.CheckFor(t, 30*time.Second, 2*time.Millisecond, func() error {
		for _, k := range storedObjects(t, bus, prefix) {
			if _, ok := train.CheckpointManifest(j.ID, k); ok {
				return nil
			}
		}
		return errors.New("no checkpoint stored yet")
	})
	stopA()
	if cur, err := store.Get(context.Background(), j.ID); err != nil || cur.Status != jobs.StatusInProgress {
		t.Fatalf("after worker A stopped: %+v (%v), want in progress", cur.Status, err)
	}
	if err := os.RemoveAll(filepath.Join(fx.Dir, "a")); err != nil {
		t.Fatal(err)
	}
	startWorker(t, bus, "b", train.Config{OutputRoot: rootB, DataDir: filepath.Join(fx.Dir, "b", "data")})
	end := w.wait(t)
	if end.Status != jobs.StatusCompleted {
		t.Fatalf("job ended %s: %+v", end.Status, end.Errors)
	}
	out := filepath.Join(rootB, j.ID)
	tp := end.Training
	if tp.Worker != "b" || tp.Attempt != 2 || !strings.HasPrefix(tp.ResumedFrom, out+string(filepath.Separator)) || tp.Step != 9 ||
		tp.OutputDir != out || tp.Artifacts != prefix || tp.FineTunedModel != j.ID || tp.FineTunedDigest == "" {
		t.Errorf("final progress %+v: want worker b, attempt 2, resumed from a fetched checkpoint in %s, the model pushed as %s", tp, out, j.ID)
	}
	traintest.SameTraining(t, ref, out, 1e-5)

	stored := strings.Join(storedObjects(t, bus, prefix), "\n")
	for _, k := range []string{"final.json", "final/model.safetensors", "final/" + mtrain.TrainerStateFile, "final/" + mtrain.LossCurveFile,
		"checkpoint-8.json", "checkpoint-8/" + mtrain.OptimizerFile, "checkpoint-8/" + mtrain.TrainerStateFile} {
		if !strings.Contains(stored, prefix+k+"\n") && !strings.HasSuffix(stored, prefix+k) {
			t.Errorf("%s%s not stored; stored:\n%s", prefix, k, stored)
		}
	}
	if strings.Contains(stored, prefix+"final/checkpoint-") {
		t.Errorf("checkpoints stored inside final/:\n%s", stored)
	}

	// The pushed model is the final output, byte for byte.
	ms, err := modelstore.New(context.Background(), bus)
	if err != nil {
		t.Fatal(err)
	}
	pulled := filepath.Join(t.TempDir(), "pulled")
	digest, err := ms.Pull(context.Background(), tp.FineTunedModel, pulled)
	if err != nil || digest != tp.FineTunedDigest {
		t.Fatalf("pull %s: %s, %v; want digest %s", tp.FineTunedModel, digest, err, tp.FineTunedDigest)
	}
	sameTopFiles(t, out, pulled)

	// Every step has its event, every evaluation too (eval_steps 2 and the
	// last step), across both attempts.
	evs := trainEvents(t, bus, j.ID)
	steps, evals := map[int]bool{}, map[int]bool{}
	for _, ev := range evs {
		switch ev.Kind {
		case schemas.TrainEventStep:
			if !(ev.Loss > 0) || !(ev.LearningRate >= 0) || ev.Epoch <= 0 || ev.MaxSteps != 9 || ev.Attempt < 1 {
				t.Errorf("step event %+v", ev)
			}
			steps[ev.GlobalStep] = true
		case schemas.TrainEventEval:
			if !(*ev.EvalLoss > 0) {
				t.Errorf("eval event %+v", ev)
			}
			evals[ev.GlobalStep] = true
		}
	}
	for s := 1; s <= 9; s++ {
		if !steps[s] {
			t.Errorf("no step event for step %d (%d events)", s, len(evs))
		}
	}
	for _, s := range []int{2, 4, 6, 8, 9} {
		if !evals[s] {
			t.Errorf("no eval event for step %d", s)
		}
	}
}

// sameTopFiles wants the regular files directly in dir (no checkpoints)
// byte-equal to those of pulled, and no others.
func sameTopFiles(t *testing.T, dir, pulled string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if !e.Type().IsRegular() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		n++
		a, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(pulled, e.Name()))
		if err != nil || !bytes.Equal(a, b) {
			t.Errorf("pulled %s differs from the output (%v)", e.Name(), err)
		}
	}
	pents, err := os.ReadDir(pulled)
	if err != nil || len(pents) != n {
		t.Errorf("pulled %d entries, the output has %d files (%v)", len(pents), n, err)
	}
}

// TestCheckpointManifest: only a checkpoint's manifest names a stored
// checkpoint, never one of its files, the final output or another job's.
func TestCheckpointManifest(t *testing.T) {
	for _, tc := range []struct {
		key  string
		step int
		ok   bool
	}{
		{"train/j1/checkpoint-8.json", 8, true},
		{"train/j1/checkpoint-8/trainer_state.json", 0, false},
		{"train/j1/checkpoint-8/adapter_config.json", 0, false},
		{"train/j1/final.json", 0, false},
		{"train/j1/checkpoint-0.json", 0, false},
		{"train/j2/checkpoint-8.json", 0, false},
		{"train/j1/checkpoint-x.json", 0, false},
	} {
		if step, ok := train.CheckpointManifest("j1", tc.key); step != tc.step || ok != tc.ok {
			t.Errorf("%s: %d %v, want %d %v", tc.key, step, ok, tc.step, tc.ok)
		}
	}
}
