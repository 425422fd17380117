package resultsink_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/parquet-go/parquet-go"

	"github.com/largeforge/largeforge/consumers/resultsink"
	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/storage"
)

// countingStore counts the reads (Open) of each key of a store.
type countingStore struct {
	storage.Store
	mu    sync.Mutex
	opens map[string]int
}

func newCountingStore(s storage.Store) *countingStore {
	return &countingStore{Store: s, opens: map[string]int{}}
}

func (c *countingStore) Open(ctx context.Context, key string) (storage.Reader, storage.Info, error) {
	c.mu.Lock()
	c.opens[key]++
	c.mu.Unlock()
	return c.Store.Open(ctx, key)
}

// partReads returns the reads of each part key of job.
func (c *countingStore) partReads(job string) map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]int{}
	for k, n := range c.opens {
		if strings.HasPrefix(k, storage.Job(job)+"parts/") {
			out[k] = n
		}
	}
	return out
}

// startCountingSink starts a sink (as startSink) whose store counts its reads.
func (e *objectsEnv) startCountingSink(t *testing.T, id string) *countingStore {
	t.Helper()
	var cs *countingStore
	e.runSink(t, resultsink.Options{AckWait: 5 * time.Second, ID: id}, func(s storage.Store) storage.Store {
		cs = newCountingStore(s)
		return cs
	})
	return cs
}

// publishWaves publishes ids in waves, each once the one before is counted,
// so that the job's rows come in several parts.
func (e *objectsEnv) publishWaves(t *testing.T, job string, ids []string, waves int) {
	t.Helper()
	for w := range waves {
		lo, hi := len(ids)*w/waves, len(ids)*(w+1)/waves
		e.publish(t, job, ids[lo:hi])
		if w == waves-1 {
			break
		}
		pipelinetest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
			j, err := e.store.Get(context.Background(), job)
			if err == nil && j.RequestCounts.Done() < hi {
				err = fmt.Errorf("counts %+v, want %d done", j.RequestCounts, hi)
			}
			return err
		})
	}
}

// checkParquetRows checks a finished job's results.parquet holds n rows.
func (e *objectsEnv) checkParquetRows(t *testing.T, j jobs.Job, n int) {
	t.Helper()
	r, info, err := e.files.Open(context.Background(), j.Outputs.Parquet)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	f, err := parquet.OpenFile(r, info.Size)
	if err != nil {
		t.Fatal(err)
	}
	if got := f.NumRows(); got != int64(n) {
		t.Fatalf("%s: %d rows, want %d", j.Outputs.Parquet, got, n)
	}
}

// The sink that stores a job's parts writes its final objects as they come:
// when the job completes, no part is read again (not one, with one sink),
// and the objects hold each row once.
func TestAssemblyReadsNoPartAtTheEnd(t *testing.T) {
	const total = 900
	e := newObjectsEnv(t)
	ids := e.createJob(t, "asm", total)
	cs := e.startCountingSink(t, "only")
	e.publishWaves(t, "asm", ids, 3)
	done := e.waitStatus(t, "asm", jobs.StatusCompleted, 60*time.Second)
	e.checkOutput(t, done, ids)
	e.checkParquetRows(t, done, total)
	if done.Finalizer != "only" {
		t.Errorf("finalizer %q", done.Finalizer)
	}
	parts, err := e.files.List(context.Background(), storage.Job("asm")+"parts/")
	if err != nil || len(parts) < 3 {
		t.Fatalf("%d parts (%v), want at least one per wave", len(parts), err)
	}
	if reads := cs.partReads("asm"); len(reads) > 0 {
		t.Errorf("parts read: %v, want none", reads)
	}
}

// With two sinks, the job's assembler reads each part the other stores at
// most once as it goes (and once more only if it existed when the assembler
// first met the job, to seed its duplicate check), never all of them again
// at the end; the objects hold each row once.
func TestAssemblyReadsOtherSinksPartsOnce(t *testing.T) {
	const total = 1200
	e := newObjectsEnv(t)
	ids := e.createJob(t, "asm2", total)
	sinks := map[string]*countingStore{"a": e.startCountingSink(t, "a"), "b": e.startCountingSink(t, "b")}
	e.publishWaves(t, "asm2", ids, 4)
	done := e.waitStatus(t, "asm2", jobs.StatusCompleted, 60*time.Second)
	e.checkOutput(t, done, ids)
	e.checkParquetRows(t, done, total)
	owner := sinks[done.Finalizer]
	if owner == nil {
		t.Fatalf("finalizer %q", done.Finalizer)
	}
	for key, n := range owner.partReads("asm2") {
		if n > 2 {
			t.Errorf("finalizer %s read %s %d times", done.Finalizer, key, n)
		}
	}
}

// A sink that stops gives back the jobs it assembles: another sink may
// finalise them at once, not once the lease has run out.
func TestStoppedSinkGivesItsJobBack(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	j := e.create(t, jobs.Spec{ID: "held", Model: "m"}, "a", "b")
	stop := e.start(t)
	e.publish(t, ok(t, j.ID, "a", "A"), "1")
	pipelinetest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		j, err := e.store.Get(ctx, j.ID)
		if err == nil && (j.RequestCounts.Completed != 1 || j.Finalizer == "") {
			err = fmt.Errorf("counts %+v, finalizer %q", j.RequestCounts, j.Finalizer)
		}
		return err
	})
	stop()
	got, err := e.store.Get(ctx, j.ID)
	if err != nil || got.Finalizer != "" || got.FinalizerUntil != 0 {
		t.Fatalf("after the stop: finalizer %q until %d (%v)", got.Finalizer, got.FinalizerUntil, err)
	}
}

// orphanChunks returns the chunk subjects of lf_artifacts that no stored
// object uses, with their messages: uploads that never finished.
func (e *objectsEnv) orphanChunks(t *testing.T) map[string]uint64 {
	t.Helper()
	ctx := context.Background()
	js := e.bus.JetStream()
	obj, err := js.ObjectStore(ctx, pipeline.BucketArtifacts)
	if err != nil {
		t.Fatal(err)
	}
	live := map[string]bool{}
	infos, err := obj.List(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoObjectsFound) {
		t.Fatal(err)
	}
	for _, info := range infos {
		live["$O."+pipeline.BucketArtifacts+".C."+info.NUID] = true
	}
	st, err := js.Stream(ctx, "OBJ_"+pipeline.BucketArtifacts)
	if err != nil {
		t.Fatal(err)
	}
	si, err := st.Info(ctx, jetstream.WithSubjectFilter("$O."+pipeline.BucketArtifacts+".C.>"))
	if err != nil {
		t.Fatal(err)
	}
	orphans := map[string]uint64{}
	for subj, n := range si.State.Subjects {
		if !live[subj] {
			orphans[subj] = n
		}
	}
	return orphans
}

// A sink killed while it assembles a job leaves chunks of uploads that
// never finished; the sink that takes the job over drops them, finishes the
// job, and lf_artifacts holds no chunk that no object uses.
func TestKilledAssemblerLeavesNoChunks(t *testing.T) {
	const total = 300
	e := newObjectsEnv(t)
	ids := e.createJob(t, "dropped", total)
	killA := e.startSink(t, "a", time.Second)
	long := strings.Repeat("once upon a time ", 200) // 3.4 KB a row: output.jsonl's uploads send chunks as the rows come
	env := &env{bus: e.bus}
	for _, id := range ids[:total/2] {
		env.publish(t, ok(t, "dropped", id, long+id), "dropped/"+id)
	}
	pipelinetest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		j, err := e.store.Get(context.Background(), "dropped")
		if err == nil && (j.RequestCounts.Done() < total/2 || j.Finalizer != "a") {
			err = fmt.Errorf("counts %+v, finalizer %q", j.RequestCounts, j.Finalizer)
		}
		return err
	})
	if len(e.orphanChunks(t)) == 0 {
		t.Fatal("no upload under way before the kill: the test proves nothing")
	}
	killA()
	e.startSink(t, "b", time.Second)
	for _, id := range ids[total/2:] {
		env.publish(t, ok(t, "dropped", id, long+id), "dropped/"+id)
	}
	done := e.waitStatus(t, "dropped", jobs.StatusCompleted, 60*time.Second)
	e.checkOutput(t, done, ids)
	if orphans := e.orphanChunks(t); len(orphans) > 0 {
		t.Errorf("chunks no object uses: %v", orphans)
	}
}
