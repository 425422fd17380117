package resultsink_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"

	"github.com/largeforge/largeforge/consumers/resultsink"
	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/schemas"
	"github.com/largeforge/largeforge/storage"
)

type env struct {
	bus   *pipeline.Bus
	store *jobs.Store
	dir   string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	_, bus := pipelinetest.StartBus(t)
	store, err := jobs.Open(context.Background(), bus)
	if err != nil {
		t.Fatal(err)
	}
	return &env{bus: bus, store: store, dir: filepath.Join(t.TempDir(), "jobs")}
}

func (e *env) start(t *testing.T) (stop func()) {
	t.Helper()
	return e.startWith(t, resultsink.Options{SweepEvery: 200 * time.Millisecond, MaxWait: 100 * time.Millisecond})
}

// startWith starts a sink with opts; stop (also run at the test's end)
// stops it and checks its error.
func (e *env) startWith(t *testing.T, opts resultsink.Options) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w, err := resultsink.Start(ctx, e.bus, e.dir, opts, pipelinetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := w.Wait(); err != nil {
			t.Errorf("sink: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

// create creates a job and records the custom_ids it submitted, as the
// submitter does before it publishes their requests.
func (e *env) create(t *testing.T, spec jobs.Spec, ids ...string) jobs.Job {
	t.Helper()
	ctx := context.Background()
	j, err := e.store.Create(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.store.PutIDs(ctx, j.ID, 0, ids); err != nil {
		t.Fatal(err)
	}
	return j
}

// publish sends a result with a message id of its own (like a redelivery after
// the stream's duplicate window, so that only the sink can dedupe it).
func (e *env) publish(t *testing.T, r schemas.Result, msgID string) {
	t.Helper()
	data, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	subj, _ := pipeline.ResultSubject(r.Job)
	if _, err := e.bus.Publish(context.Background(), subj, data, msgID, nil); err != nil {
		t.Fatal(err)
	}
}

func ok(t *testing.T, job, id, text string) schemas.Result {
	t.Helper()
	r, err := schemas.NewResult(job, id, "m", jobs.KindCompletion, 0, schemas.CompletionResponse{
		ID: "cmpl-" + id, Object: schemas.ObjectTextCompletion, Model: "m",
		Choices: []schemas.Choice{{Text: text, FinishReason: "length"}}, Usage: schemas.Usage{PromptTokens: 1, CompletionTokens: 2, TotalTokens: 3}})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (e *env) waitStatus(t *testing.T, job string, want jobs.Status) jobs.Job {
	t.Helper()
	var j jobs.Job
	pipelinetest.CheckFor(t, 15*time.Second, 20*time.Millisecond, func() error {
		var err error
		if j, err = e.store.Get(context.Background(), job); err != nil {
			return err
		}
		if j.Status != want {
			return &statusErr{j.Status, want}
		}
		return nil
	})
	return j
}

type statusErr struct{ got, want jobs.Status }

func (s *statusErr) Error() string { return "status " + string(s.got) + ", want " + string(s.want) }

func ids(t *testing.T, lines []schemas.OutputLine) []string {
	t.Helper()
	var out []string
	for _, l := range lines {
		out = append(out, l.CustomID)
	}
	sort.Strings(out)
	return out
}

// Redelivered results, across a restart of the sink, give one row per
// custom_id; the job completes when every row is in.
func TestSinkDedupeAcrossRestart(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	j := e.create(t, jobs.Spec{ID: "job1", Model: "m"}, "a", "b")
	stop := e.start(t)
	e.publish(t, ok(t, j.ID, "a", "A"), "1")
	e.publish(t, ok(t, j.ID, "b", "B"), "2")
	e.publish(t, ok(t, j.ID, "a", "A again"), "3")
	pipelinetest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		j, err := e.store.Get(ctx, j.ID)
		if err == nil && j.RequestCounts.Completed != 2 {
			return &statusErr{"counting", "2 completed"}
		}
		return err
	})
	stop()

	e.start(t)
	// The submitter goes on: the chunk grows, and the sink reads it again.
	if err := e.store.PutIDs(ctx, j.ID, 0, []string{"a", "b", "c", "d"}); err != nil {
		t.Fatal(err)
	}
	e.publish(t, ok(t, j.ID, "b", "B again"), "4")
	e.publish(t, schemas.ErrorResult(j.ID, "c", "m", jobs.KindCompletion, 3, schemas.CodeInvalidRequest, "Invalid max_tokens"), "5")
	d := ok(t, j.ID, "d", "D <&>")
	e.publish(t, d, "6")
	if _, err := e.store.Transition(ctx, j.ID, jobs.StatusInProgress, func(j *jobs.Job) { j.RequestCounts.Total = 4 }); err != nil {
		t.Fatal(err)
	}
	if err := jobs.PublishControl(ctx, e.bus, j.ID, schemas.ControlSubmitted); err != nil {
		t.Fatal(err)
	}
	done := e.waitStatus(t, j.ID, jobs.StatusCompleted)
	if done.RequestCounts != (jobs.Counts{Total: 4, Completed: 3, Failed: 1}) {
		t.Errorf("counts %+v", done.RequestCounts)
	}
	out, err := resultsink.ReadOutput(filepath.Join(done.Outputs.LocalDir, resultsink.FileOutput))
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(t, out); len(got) != 4 || got[0] != "a" || got[3] != "d" {
		t.Fatalf("output ids %v", got)
	}
	for _, l := range out {
		if l.CustomID == "a" {
			var body schemas.CompletionResponse
			if err := json.Unmarshal(l.Response.Body, &body); err != nil || body.Choices[0].Text != "A" || l.Response.StatusCode != 200 {
				t.Errorf("row a: %+v %v (the first result wins)", body, err)
			}
		}
		if l.CustomID == "d" && string(l.Response.Body) != string(d.Response) {
			t.Errorf("row d: body %s, want the bytes the worker encoded, %s", l.Response.Body, d.Response)
		}
		if l.CustomID == "c" && (l.Error == nil || l.Error.Message != "Invalid max_tokens" || l.Response.StatusCode != 400) {
			t.Errorf("row c: %+v", l)
		}
	}
	errs, err := resultsink.ReadOutput(filepath.Join(done.Outputs.LocalDir, resultsink.FileErrors))
	if err != nil || len(errs) != 1 || errs[0].CustomID != "c" {
		t.Errorf("errors.jsonl %v %v", errs, err)
	}
	f, err := os.Open(filepath.Join(done.Outputs.LocalDir, resultsink.FileResults))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := parquet.Read[resultsink.Row](f, mustSize(t, f))
	if err != nil || len(rows) != 4 {
		t.Fatalf("results.parquet: %d rows, %v", len(rows), err)
	}
}

func mustSize(t *testing.T, f *os.File) int64 {
	t.Helper()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// An empty job completes on its submitted marker; an unknown job's results
// are dead-lettered without blocking the stream.
func TestSinkEmptyAndUnknownJobs(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	e.start(t)
	e.publish(t, ok(t, "ghost", "x", "X"), "g1")
	j, err := e.store.Create(ctx, jobs.Spec{ID: "empty", Model: "m"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.Transition(ctx, j.ID, jobs.StatusInProgress, nil); err != nil {
		t.Fatal(err)
	}
	if err := jobs.PublishControl(ctx, e.bus, j.ID, schemas.ControlSubmitted); err != nil {
		t.Fatal(err)
	}
	done := e.waitStatus(t, j.ID, jobs.StatusCompleted)
	if out, err := resultsink.ReadOutput(filepath.Join(done.Outputs.LocalDir, resultsink.FileOutput)); err != nil || len(out) != 0 {
		t.Errorf("output %v %v", out, err)
	}
}

// A job past its completion window expires with what it has.
func TestSinkExpires(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	j := e.create(t, jobs.Spec{ID: "old", Model: "m", CompletionWindow: time.Second}, "a", "b")
	if _, err := e.store.Transition(ctx, j.ID, jobs.StatusInProgress, func(j *jobs.Job) { j.RequestCounts.Total = 2 }); err != nil {
		t.Fatal(err)
	}
	e.start(t)
	e.publish(t, ok(t, j.ID, "a", "A"), "1")
	done := e.waitStatus(t, j.ID, jobs.StatusExpired)
	if done.RequestCounts.Completed != 1 || done.Outputs.Output == "" {
		t.Errorf("expired job %+v", done)
	}
}

// A request dead-lettered by the infer stage (a poison request, after
// MaxDeliver) becomes an error row, and the job completes.
func TestSinkDeadLetterBecomesErrorRow(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	j := e.create(t, jobs.Spec{ID: "poison", Model: "m"}, "good", "bad")
	if _, err := e.store.Transition(ctx, j.ID, jobs.StatusInProgress, func(j *jobs.Job) { j.RequestCounts.Total = 2 }); err != nil {
		t.Fatal(err)
	}
	e.start(t)
	e.publish(t, ok(t, j.ID, "good", "G"), schemas.MsgID(j.ID, "good"))
	req, _ := json.Marshal(schemas.Request{Job: j.ID, CustomID: "bad", Kind: jobs.KindCompletion, Model: "m", Line: 2,
		Completion: &schemas.CompletionRequest{Model: "m", Prompt: "x", MaxTokens: 4, TopP: 1}})
	rec := pipeline.DLQRecord{Reason: "max deliveries exceeded", Error: "max deliveries exceeded: generate: backend failure", Stage: "infer",
		Subject: "lf.req." + j.ID + ".m", Deliveries: 3, Data: req, Time: time.Now()}
	if err := e.bus.PublishDLQ(ctx, "infer", j.ID, rec, "dlq-1"); err != nil {
		t.Fatal(err)
	}
	// Not a job request: skipped, the stream goes on.
	if err := e.bus.PublishDLQ(ctx, "infer", j.ID, pipeline.DLQRecord{Reason: "not a job request", Stage: "infer", Subject: "lf.req.x.m", Data: []byte("garbage"), Time: time.Now()}, "dlq-2"); err != nil {
		t.Fatal(err)
	}
	done := e.waitStatus(t, j.ID, jobs.StatusCompleted)
	if done.RequestCounts != (jobs.Counts{Total: 2, Completed: 1, Failed: 1}) {
		t.Errorf("counts %+v", done.RequestCounts)
	}
	errs, err := resultsink.ReadOutput(filepath.Join(done.Outputs.LocalDir, resultsink.FileErrors))
	if err != nil || len(errs) != 1 || errs[0].CustomID != "bad" || errs[0].Error.Code != schemas.CodeDeadLetter || errs[0].Response.StatusCode != 500 ||
		errs[0].Error.Message != "max deliveries exceeded: generate: backend failure (after 3 deliveries)" {
		t.Errorf("errors.jsonl %+v %v", errs, err)
	}
}

// Training jobs are their train worker's: a sweep of every job, past the
// completion window too, and a stray result leave a running training job's
// record as it was (issue 11: the sweep completed it, 0 of 0 requests done).
func TestSinkLeavesTrainingJobsAlone(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	for _, id := range []string{"train_running", "train_late"} {
		if _, err := e.store.Create(ctx, jobs.Spec{ID: id, Kind: jobs.KindTraining, Model: "out", CompletionWindow: time.Second}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.store.Transition(ctx, id, jobs.StatusInProgress, func(j *jobs.Job) {
			j.Training = &jobs.TrainingProgress{Step: 3, MaxSteps: 40}
		}); err != nil {
			t.Fatal(err)
		}
	}
	before, err := e.store.Get(ctx, "train_running")
	if err != nil {
		t.Fatal(err)
	}
	files, err := storage.NewLocal(storage.Dirs{Jobs: e.dir})
	if err != nil {
		t.Fatal(err)
	}
	sink, err := resultsink.New(files, e.store, pipelinetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := sink.Sweep(ctx, true); err != nil {
		t.Fatal(err)
	}
	// Past the completion window (the record's expires_at): still not the sink's to expire.
	if _, err := e.store.Update(ctx, "train_late", func(j *jobs.Job) error { j.ExpiresAt = 1; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := sink.Sweep(ctx, true); err != nil {
		t.Fatal(err)
	}
	// The running sink: a result on a training job's subject is dropped.
	// A batch job published after it completes, so the result has been handled.
	e.start(t)
	e.publish(t, ok(t, "train_running", "x", "X"), "stray")
	if _, err := e.store.Create(ctx, jobs.Spec{ID: "after", Model: "m"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.Transition(ctx, "after", jobs.StatusInProgress, nil); err != nil {
		t.Fatal(err)
	}
	if err := jobs.PublishControl(ctx, e.bus, "after", schemas.ControlSubmitted); err != nil {
		t.Fatal(err)
	}
	e.waitStatus(t, "after", jobs.StatusCompleted)
	for _, id := range []string{"train_running", "train_late"} {
		j, err := e.store.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if j.Status != jobs.StatusInProgress || j.Outputs != (jobs.Outputs{}) || j.FinalizingAt != 0 {
			t.Errorf("%s after the sweeps: %s, outputs %+v", id, j.Status, j.Outputs)
		}
	}
	if after, _ := e.store.Get(ctx, "train_running"); after.Revision != before.Revision {
		t.Errorf("the sweep wrote the training job's record (revision %d → %d)", before.Revision, after.Revision)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "train_running")); !os.IsNotExist(err) {
		t.Errorf("the sink made a directory for a training job: %v", err)
	}
}

// TestLastResultsDoNotWaitOutGather: a batch closes once it holds every
// result its job lacks, however long the gather: a job whose results all
// came completes long before the gather (a minute) would have ended.
func TestLastResultsDoNotWaitOutGather(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	j := e.create(t, jobs.Spec{ID: "gathered", Model: "m"}, "a", "b", "c")
	if _, err := e.store.Transition(ctx, j.ID, jobs.StatusInProgress, func(j *jobs.Job) { j.RequestCounts.Total = 3 }); err != nil {
		t.Fatal(err)
	}
	e.startWith(t, resultsink.Options{SweepEvery: time.Hour, MaxWait: 100 * time.Millisecond, Gather: time.Minute})
	for i, id := range []string{"a", "b", "c"} {
		e.publish(t, ok(t, j.ID, id, strings.ToUpper(id)), strconv.Itoa(i))
	}
	// 30 s: well within the minute the batch would otherwise have waited.
	pipelinetest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		got, err := e.store.Get(ctx, j.ID)
		if err == nil && got.Status != jobs.StatusCompleted {
			return &statusErr{got.Status, jobs.StatusCompleted}
		}
		return err
	})
}
