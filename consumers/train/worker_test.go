package train_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/largeforge/largeforge/consumers/train"
	"github.com/largeforge/largeforge/consumers/train/traintest"
	"github.com/largeforge/largeforge/jobs"
	mtrain "github.com/largeforge/largeforge/model/train"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

func jobStore(t *testing.T, bus *pipeline.Bus) *jobs.Store {
	t.Helper()
	s, err := jobs.Open(context.Background(), bus)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// startWorker runs a train worker until the test ends (or stop is called).
func startWorker(t *testing.T, bus *pipeline.Bus, id string, cfg train.Config) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cfg.WorkerID = id
	if cfg.ProgressEvery == 0 {
		cfg.ProgressEvery = 5 * time.Millisecond
	}
	if cfg.MaxWait == 0 {
		cfg.MaxWait = 200 * time.Millisecond
	}
	w, err := train.Start(ctx, bus, cfg, pipelinetest.Logger(t), nil)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := w.Wait(); err != nil {
				t.Errorf("worker %s: %v", id, err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// watchJob records every version of the job's record until it ends.
type watchJob struct {
	mu   sync.Mutex
	seen []jobs.Job
	done chan jobs.Job
}

func watch(t *testing.T, s *jobs.Store, id string, timeout time.Duration) *watchJob {
	t.Helper()
	w := &watchJob{done: make(chan jobs.Job, 1)}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	go func() {
		last, _ := s.Watch(ctx, id, func(j jobs.Job) bool {
			w.mu.Lock()
			w.seen = append(w.seen, j)
			w.mu.Unlock()
			return true
		})
		w.done <- last
	}()
	return w
}

func (w *watchJob) wait(t *testing.T) jobs.Job {
	t.Helper()
	j := <-w.done
	if !j.Status.Terminal() {
		t.Fatalf("job %s did not end: %s", j.ID, j.Status)
	}
	return j
}

// progressed returns the in-progress records that carry a step.
func (w *watchJob) progressed() []jobs.Job {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []jobs.Job
	for _, j := range w.seen {
		if j.Status == jobs.StatusInProgress && j.Training != nil && j.Training.Step > 0 {
			out = append(out, j)
		}
	}
	return out
}

// TestTrainingJob submits a training job, which a worker takes, reports
// progress for in lf_jobs and completes, with the model in output_dir.
func TestTrainingJob(t *testing.T) {
	_, bus := pipelinetest.StartBus(t)
	store := jobStore(t, bus)
	fx := traintest.New(t, 8)
	out := filepath.Join(fx.Dir, "out")
	startWorker(t, bus, "w1", train.Config{})

	j, err := train.Submit(context.Background(), bus, store, fx.RunConfig(t, out, 2, 4), "")
	if err != nil {
		t.Fatal(err)
	}
	if j.Kind != jobs.KindTraining || j.Object != jobs.ObjectFineTuningJob || j.Status != jobs.StatusValidating || j.Model != "out" {
		t.Fatalf("submitted %+v", j)
	}
	w := watch(t, store, j.ID, 60*time.Second)
	end := w.wait(t)
	if end.Status != jobs.StatusCompleted {
		t.Fatalf("job ended %s: %+v", end.Status, end.Errors)
	}
	tp := end.Training
	if tp == nil || tp.Step != 8 || tp.MaxSteps != 8 || !(tp.Loss > 0) || tp.Epoch != 2 || tp.Worker != "w1" || tp.Attempt != 1 || tp.OutputDir != out {
		t.Errorf("final progress %+v", tp)
	}
	if end.InProgressAt == 0 || end.FinalizingAt == 0 || end.CompletedAt == 0 {
		t.Errorf("timestamps %+v", end)
	}
	prog := w.progressed()
	if len(prog) == 0 {
		t.Fatalf("no in-progress record with a step among %d versions", len(w.seen))
	}
	eta := false
	for _, p := range prog {
		tp := p.Training
		if !(tp.Loss > 0) || !(tp.LearningRate > 0) || tp.Epoch <= 0 || tp.MaxSteps != 8 || !(tp.GradNorm > 0) {
			t.Errorf("in-progress record %+v", tp)
		}
		eta = eta || (tp.ETASeconds > 0 && tp.Step < tp.MaxSteps && tp.SamplesPerSecond > 0)
	}
	if !eta {
		t.Errorf("no in-progress record with an ETA and a throughput among %d", len(prog))
	}
	// The record uses the training log's names.
	raw, err := json.Marshal(prog[len(prog)-1].Training)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{`"global_step":`, `"grad_norm":`, `"train_samples_per_second":`, `"learning_rate":`, `"epoch":`} {
		if !strings.Contains(string(raw), k) {
			t.Errorf("progress record %s has no %s", raw, k)
		}
	}
	for _, f := range []string{"model.safetensors", "config.json", "tokenizer.json", mtrain.TrainerStateFile, "checkpoint-4", "checkpoint-8"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("output: %v", err)
		}
	}
	if l := traintest.StepLosses(t, out); len(l) != 8 {
		t.Errorf("logged %d steps, want 8", len(l))
	}
	// The loss curve is titled by the job's id, not the output folder.
	lossCurveTitled(t, out, j.ID+" ("+filepath.Base(fx.Base)+")")
}

// lossCurveTitled fails unless out's loss curve is the picture of its
// trainer_state.json's log history titled by run.
func lossCurveTitled(t *testing.T, out, run string) {
	t.Helper()
	want := filepath.Join(t.TempDir(), mtrain.LossCurveFile)
	if err := mtrain.WriteLossCurve(want, run, traintest.LogHistory(t, out)); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(out, mtrain.LossCurveFile))
	if err != nil {
		t.Fatal(err)
	}
	if w, _ := os.ReadFile(want); !bytes.Equal(got, w) {
		t.Errorf("%s is not the loss curve titled %q", mtrain.LossCurveFile, "Loss: "+run)
	}
}

// TestCancelTrainingJob cancels a running job: the trainer stops at its
// next step, saves nothing more, and the job ends cancelled.
func TestCancelTrainingJob(t *testing.T) {
	_, bus := pipelinetest.StartBus(t)
	store := jobStore(t, bus)
	fx := traintest.New(t, 8)
	out := filepath.Join(fx.Dir, "out")
	startWorker(t, bus, "w1", train.Config{})
	j, err := train.Submit(context.Background(), bus, store, fx.RunConfig(t, out, 100, 2), "")
	if err != nil {
		t.Fatal(err)
	}
	w := watch(t, store, j.ID, 60*time.Second)
	pipelinetest.CheckFor(t, 30*time.Second, 5*time.Millisecond, func() error {
		if len(w.progressed()) == 0 {
			return errors.New("no progress yet")
		}
		return nil
	})
	if _, _, err := jobs.Cancel(context.Background(), bus, store, j.ID); err != nil {
		t.Fatal(err)
	}
	end := w.wait(t)
	if end.Status != jobs.StatusCancelled || end.CancelledAt == 0 {
		t.Fatalf("job ended %s, want cancelled", end.Status)
	}
	if end.Training == nil || end.Training.Step >= 400 || end.Training.ETASeconds != 0 {
		t.Fatalf("progress %+v: the run was not cut short", end.Training)
	}
	if _, err := os.Stat(filepath.Join(out, mtrain.TrainerStateFile)); err == nil {
		t.Errorf("a final model was saved after the cancel")
	}
	cks, _ := mtrain.ListCheckpoints(out)
	if n := len(cks); n > 0 {
		step, _ := strconv.Atoi(strings.TrimPrefix(filepath.Base(cks[n-1]), mtrain.CheckpointPrefix))
		if step > end.Training.Step {
			t.Errorf("checkpoint %s saved after the last step reported (%d)", cks[n-1], end.Training.Step)
		}
	}
	// The cancelled job's message is acked: nothing is left to redeliver.
	info, err := bus.JetStream().Stream(context.Background(), pipeline.StreamTrain)
	if err != nil {
		t.Fatal(err)
	}
	pipelinetest.CheckFor(t, time.Minute, 10*time.Millisecond, func() error {
		if st, err := info.Info(context.Background()); err != nil || st.State.Msgs != 0 {
			return fmt.Errorf("messages left on %s (%v)", pipeline.StreamTrain, err)
		}
		return nil
	})
}

// TestTakeoverAfterStop: worker A stops mid-job (its ctx ends, as on
// SIGTERM): the job's message is nakked and worker B resumes from the
// newest checkpoint; the run's losses and final weights equal an
// uninterrupted run's within 1e-5.
func TestTakeoverAfterStop(t *testing.T) {
	_, bus := pipelinetest.StartBus(t)
	store := jobStore(t, bus)
	fx := traintest.New(t, 8)
	const epochs, save = 3, 2 // 12 steps

	ref := filepath.Join(fx.Dir, "ref")
	if _, err := mtrain.Run(context.Background(), fx.RunConfig(t, ref, epochs, save), pipelinetest.Logger(t)); err != nil {
		t.Fatal(err)
	}

	out := filepath.Join(fx.Dir, "out")
	stopA := startWorker(t, bus, "a", train.Config{DrainTimeout: time.Millisecond})
	j, err := train.Submit(context.Background(), bus, store, fx.RunConfig(t, out, epochs, save), "")
	if err != nil {
		t.Fatal(err)
	}
	w := watch(t, store, j.ID, 90*time.Second)
	pipelinetest.CheckFor(t, 30*time.Second, 2*time.Millisecond, func() error {
		if cks, _ := mtrain.CompleteCheckpoints(out); len(cks) == 0 {
			return errors.New("no checkpoint yet")
		}
		return nil
	})
	stopA()
	if _, err := os.Stat(filepath.Join(out, mtrain.TrainerStateFile)); err == nil {
		t.Fatal("worker A finished before it was stopped")
	}
	startWorker(t, bus, "b", train.Config{})
	end := w.wait(t)
	if end.Status != jobs.StatusCompleted {
		t.Fatalf("job ended %s: %+v", end.Status, end.Errors)
	}
	if tp := end.Training; tp.Worker != "b" || tp.Attempt != 2 || tp.ResumedFrom == "" || tp.Step != epochs*4 {
		t.Errorf("final progress %+v: want worker b, attempt 2, resumed", tp)
	}
	traintest.SameTraining(t, ref, out, 1e-5)
}

// TestCancelQueuedJob: a job cancelled before any worker took it is ended
// cancelled by the worker that takes it, without training.
func TestCancelQueuedJob(t *testing.T) {
	_, bus := pipelinetest.StartBus(t)
	store := jobStore(t, bus)
	fx := traintest.New(t, 4)
	out := filepath.Join(fx.Dir, "out")
	j, err := train.Submit(context.Background(), bus, store, fx.RunConfig(t, out, 1, 1), "train_queued")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := jobs.Cancel(context.Background(), bus, store, j.ID); err != nil {
		t.Fatal(err)
	}
	w := watch(t, store, j.ID, 30*time.Second)
	startWorker(t, bus, "w1", train.Config{})
	if end := w.wait(t); end.Status != jobs.StatusCancelled {
		t.Fatalf("job ended %s, want cancelled", end.Status)
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("output_dir exists after a cancel before training: %v", err)
	}
	if _, err := train.Submit(context.Background(), bus, store, fx.RunConfig(t, out, 1, 1), "train_queued"); !errors.Is(err, jobs.ErrExists) {
		t.Errorf("second submit with the same id: %v, want ErrExists", err)
	}
}

// TestLongJobKeptInProgress: a job that trains for many AckWaits is not
// redelivered to the idle second worker: its worker keeps the message in
// progress. The job is long enough never to end by itself in the test: it
// is cancelled once it has been in progress on its first delivery for three
// AckWaits, whatever the machine's speed.
func TestLongJobKeptInProgress(t *testing.T) {
	if testing.Short() {
		t.Skip("outlasts the ack wait on purpose (make test runs it)")
	}
	_, bus := pipelinetest.StartBus(t)
	store := jobStore(t, bus)
	fx := traintest.New(t, 2000) // 1,000 steps an epoch
	out := filepath.Join(fx.Dir, "out")
	// InProgress goes every AckWait/3: only a process stalled for most of a
	// second could let the message be redelivered.
	const ackWait = 1500 * time.Millisecond
	startWorker(t, bus, "w1", train.Config{AckWait: ackWait})
	startWorker(t, bus, "w2", train.Config{AckWait: ackWait})
	j, err := train.Submit(context.Background(), bus, store, fx.RunConfig(t, out, 100, 1_000_000), "")
	if err != nil {
		t.Fatal(err)
	}
	w := watch(t, store, j.ID, 5*time.Minute)
	var started time.Time
	pipelinetest.CheckFor(t, time.Minute, 10*time.Millisecond, func() error {
		if started.IsZero() && len(w.progressed()) > 0 {
			started = time.Now()
		}
		if started.IsZero() || time.Since(started) < 3*ackWait {
			return errors.New("not yet in progress for three AckWaits")
		}
		return nil
	})
	cur, err := store.Get(context.Background(), j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if cur.Status != jobs.StatusInProgress || cur.Training == nil || cur.Training.Attempt != 1 {
		t.Fatalf("after three AckWaits of training: %s %+v, want in progress on its first delivery", cur.Status, cur.Training)
	}
	if _, _, err := jobs.Cancel(context.Background(), bus, store, j.ID); err != nil {
		t.Fatal(err)
	}
	end := w.wait(t)
	if end.Status != jobs.StatusCancelled || end.Training.Attempt != 1 {
		t.Errorf("job ended %s on delivery %d, want cancelled on the first", end.Status, end.Training.Attempt)
	}
	for _, p := range w.progressed() {
		if p.Training.Attempt != 1 || p.Training.Worker != end.Training.Worker {
			t.Errorf("progress from attempt %d on %s: the message was redelivered", p.Training.Attempt, p.Training.Worker)
		}
	}
}
