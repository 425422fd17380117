package resultsink_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/largeforge/largeforge/consumers/resultsink"
	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/storage"
)

// objectsEnv is a bus whose sinks store into lf_artifacts, each on a
// connection of its own.
type objectsEnv struct {
	srv   *pipeline.Embedded
	bus   *pipeline.Bus
	store *jobs.Store
	files *storage.Objects
}

func newObjectsEnv(t *testing.T) *objectsEnv {
	t.Helper()
	ctx := context.Background()
	srv, bus := pipelinetest.StartBus(t)
	store, err := jobs.Open(ctx, bus)
	if err != nil {
		t.Fatal(err)
	}
	files, err := storage.OpenObjects(ctx, bus, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return &objectsEnv{srv: srv, bus: bus, store: store, files: files}
}

// startSink starts a sink on a connection of its own; kill ends it as a
// crash would: its connection closed at once, nothing drained or acked.
func (e *objectsEnv) startSink(t *testing.T, id string, lease time.Duration) (kill func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	bus := pipelinetest.Connect(t, e.srv)
	files, err := storage.OpenObjects(ctx, bus, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	w, err := resultsink.StartStore(ctx, bus, files, resultsink.Options{SweepEvery: 100 * time.Millisecond, MaxWait: 50 * time.Millisecond,
		AckWait: time.Second, FinalizeLease: lease, ID: id}, pipelinetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	killed := false
	kill = func() {
		if killed {
			return
		}
		killed = true
		bus.Close()
		cancel()
		_ = w.Wait() // a killed sink's errors are expected
	}
	t.Cleanup(kill)
	return kill
}

// createJob creates an in_progress job of total results whose custom_ids
// are r00000.. and records them.
func (e *objectsEnv) createJob(t *testing.T, id string, total int) []string {
	t.Helper()
	ctx := context.Background()
	if _, err := e.store.Create(ctx, jobs.Spec{ID: id, Model: "m"}); err != nil {
		t.Fatal(err)
	}
	ids := make([]string, total)
	for i := range ids {
		ids[i] = fmt.Sprintf("r%05d", i)
	}
	for n := 0; n*jobs.IDsChunkRows < total; n++ {
		if err := e.store.PutIDs(ctx, id, n, ids[n*jobs.IDsChunkRows:min((n+1)*jobs.IDsChunkRows, total)]); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.store.Transition(ctx, id, jobs.StatusInProgress, func(j *jobs.Job) { j.RequestCounts.Total = total }); err != nil {
		t.Fatal(err)
	}
	return ids
}

func (e *objectsEnv) publish(t *testing.T, job string, ids []string) {
	t.Helper()
	env := &env{bus: e.bus}
	for _, id := range ids {
		env.publish(t, ok(t, job, id, "text of "+id), job+"/"+id)
	}
}

func (e *objectsEnv) waitStatus(t *testing.T, job string, want jobs.Status, timeout time.Duration) jobs.Job {
	t.Helper()
	var j jobs.Job
	pipelinetest.CheckFor(t, timeout, 50*time.Millisecond, func() error {
		var err error
		if j, err = e.store.Get(context.Background(), job); err == nil && j.Status != want {
			err = fmt.Errorf("job %s %s (%+v), want %s", job, j.Status, j.RequestCounts, want)
		}
		return err
	})
	return j
}

// checkOutput reads a finished job's output.jsonl from the object store and
// checks it holds exactly one line per id.
func (e *objectsEnv) checkOutput(t *testing.T, j jobs.Job, ids []string) {
	t.Helper()
	r, _, err := e.files.Open(context.Background(), j.Outputs.Output)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	lines, err := resultsink.DecodeOutput(r)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, l := range lines {
		seen[l.CustomID]++
	}
	for _, id := range ids {
		if seen[id] != 1 {
			t.Fatalf("%s: %d lines for %s (%d lines, %d ids)", j.Outputs.Output, seen[id], id, len(lines), len(ids))
		}
	}
	if len(lines) != len(ids) || j.RequestCounts.Completed != len(ids) || j.RequestCounts.Failed != 0 {
		t.Fatalf("%d lines, counts %+v; want %d", len(lines), j.RequestCounts, len(ids))
	}
}

// TestKilledSinkLosesNothing: two sinks share a job; one is killed (its
// connection closed, its batch in flight never acked) while results still
// arrive. The job completes with exactly one row per custom_id, read back
// from lf_artifacts.
func TestKilledSinkLosesNothing(t *testing.T) {
	const total = 3000
	e := newObjectsEnv(t)
	ids := e.createJob(t, "failover", total)
	killA := e.startSink(t, "sink-a", 2*time.Second)
	e.startSink(t, "sink-b", 2*time.Second)
	e.publish(t, "failover", ids[:total/2])
	pipelinetest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		j, err := e.store.Get(context.Background(), "failover")
		if err == nil && j.RequestCounts.Done() < total/2 {
			err = fmt.Errorf("%+v", j.RequestCounts)
		}
		return err
	})
	e.publish(t, "failover", ids[total/2:])
	killA() // mid-batch: whatever it fetched is redelivered to sink-b after the ack wait
	done := e.waitStatus(t, "failover", jobs.StatusCompleted, 60*time.Second)
	e.checkOutput(t, done, ids)
}

// TestFinalizerTakeover: a job left finalizing by a finalizer that died is
// taken over once its lease runs out, and its counts, run past the rows by
// results stored twice, end exact.
func TestFinalizerTakeover(t *testing.T) {
	ctx := context.Background()
	e := newObjectsEnv(t)
	ids := e.createJob(t, "orphan", 3)
	until := time.Now().Add(1500 * time.Millisecond)
	if _, err := e.store.Update(ctx, "orphan", func(j *jobs.Job) error {
		j.RequestCounts.Completed = 3
		j.Finalizer, j.FinalizerUntil = "dead-sink", until.UnixMilli()
		return j.SetStatus(jobs.StatusFinalizing, time.Now())
	}); err != nil {
		t.Fatal(err)
	}
	e.startSink(t, "heir", time.Second)
	e.publish(t, "orphan", ids)
	done := e.waitStatus(t, "orphan", jobs.StatusCompleted, 30*time.Second)
	if time.Now().Before(until) || done.Finalizer != "heir" {
		t.Errorf("completed by %q before the dead finalizer's lease ran out (%v)", done.Finalizer, until)
	}
	e.checkOutput(t, done, ids)
}

// TestFinalizerFindsRowsMissing: counts that went past the rows stored make
// a sink finalise too early; its merge finds rows missing and hands the job
// back to in_progress with exact counts, and the job completes when the
// rest arrive.
func TestFinalizerFindsRowsMissing(t *testing.T) {
	ctx := context.Background()
	e := newObjectsEnv(t)
	ids := e.createJob(t, "early", 4)
	if _, err := e.store.AddCounts(ctx, "early", 2, 0); err != nil { // two rows counted that no part holds
		t.Fatal(err)
	}
	e.startSink(t, "s", 5*time.Second)
	e.publish(t, "early", ids[:2])
	pipelinetest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		j, err := e.store.Get(ctx, "early")
		if err == nil && (j.Status != jobs.StatusInProgress || j.FinalizingAt == 0 || j.RequestCounts.Completed != 2 || j.Finalizer != "") {
			err = fmt.Errorf("%s finalizing at %d, counts %+v, finalizer %q", j.Status, j.FinalizingAt, j.RequestCounts, j.Finalizer)
		}
		return err
	})
	e.publish(t, "early", ids[2:])
	done := e.waitStatus(t, "early", jobs.StatusCompleted, 30*time.Second)
	e.checkOutput(t, done, ids)
}
