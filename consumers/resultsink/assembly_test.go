package resultsink_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"

	"github.com/largeforge/largeforge/consumers/resultsink"
	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/storage"
)

// countingStore counts the reads (Open) of each key of a store, and
// records the objects it created (its sink's parts).
type countingStore struct {
	storage.Store
	mu      sync.Mutex
	opens   map[string]int
	created map[string]bool
}

func newCountingStore(s storage.Store) *countingStore {
	return &countingStore{Store: s, opens: map[string]int{}, created: map[string]bool{}}
}

// Unwrap is the counted store: its parts are listed as its own are.
func (c *countingStore) Unwrap() storage.Store { return c.Store }

func (c *countingStore) Create(ctx context.Context, key string, write func(io.Writer) error) (storage.Info, error) {
	info, err := c.Store.Create(ctx, key, write)
	if err == nil {
		c.mu.Lock()
		c.created[key] = true
		c.mu.Unlock()
	}
	return info, err
}

// ownParts returns the parts of job this store created.
func (c *countingStore) ownParts(job string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for k := range c.created {
		if strings.HasPrefix(k, storage.Job(job)+"parts/") {
			out = append(out, k)
		}
	}
	return out
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
	return e.startCountingSinkWith(t, resultsink.Options{SweepEvery: 100 * time.Millisecond, MaxWait: 50 * time.Millisecond,
		AckWait: 5 * time.Second, ID: id})
}

// startCountingSinkWith is startCountingSink with opts.
func (e *objectsEnv) startCountingSinkWith(t *testing.T, opts resultsink.Options) *countingStore {
	t.Helper()
	id := opts.ID
	ctx, cancel := context.WithCancel(context.Background())
	bus := pipelinetest.Connect(t, e.srv)
	files, err := storage.OpenObjects(ctx, bus, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cs := newCountingStore(files)
	w, err := resultsink.StartStore(ctx, bus, cs, opts, pipelinetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		if err := w.Wait(); err != nil {
			t.Errorf("sink %s: %v", id, err)
		}
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

// The sink that stores a job's parts writes its final files as they come:
// when the job completes, no part is read again (not one, with one sink),
// the objects hold each row once, and the spool is gone.
func TestAssemblyReadsNoPartAtTheEnd(t *testing.T) {
	const total = 900
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp) // the spool's
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
	if left, _ := filepath.Glob(filepath.Join(tmp, "largeforge-results-*")); len(left) > 0 {
		t.Errorf("spool left behind: %v", left)
	}
	if _, err := os.Stat(tmp); err != nil {
		t.Fatal(err)
	}
}

// With two sinks, the job's assembler never reads a part it stored itself
// (it wrote those from memory), and reads each part the other stores at
// most once as it goes (and once more only if it existed when the
// assembler first met the job, to seed its duplicate check), never all of
// them again at the end; the objects hold each row once.
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
	reads := owner.partReads("asm2")
	for key, n := range reads {
		if n > 2 {
			t.Errorf("finalizer %s read %s %d times", done.Finalizer, key, n)
		}
	}
	own := owner.ownParts("asm2")
	if len(own) == 0 {
		t.Fatalf("finalizer %s stored no part: the test proves nothing", done.Finalizer)
	}
	for _, key := range own {
		if n := reads[key]; n > 0 {
			t.Errorf("finalizer %s read its own part %s %d times", done.Finalizer, key, n)
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

// An assembly's files have no name while the job runs (their descriptors
// hold them): a sink killed mid-job leaves nothing in the temporary
// directory. Where files can be opened unnamed (Linux, most filesystems)
// they never have a name, which is checked while the job is assembled;
// elsewhere they are named for an instant and only the end is checked.
func TestAssemblySpoolHasNoNames(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	unnamed := true
	if f, err := resultsink.OpenUnnamed(tmp); err != nil {
		unnamed = false
		t.Logf("files are named for an instant here (%v): the check while assembling is skipped", err)
	} else {
		f.Close()
	}
	e := newObjectsEnv(t)
	ids := e.createJob(t, "unnamed", 200)
	kill := e.startSink(t, "s", time.Minute)
	e.publish(t, "unnamed", ids[:100])
	pipelinetest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		j, err := e.store.Get(context.Background(), "unnamed")
		if err == nil && (j.RequestCounts.Done() < 100 || j.Finalizer != "s") {
			err = fmt.Errorf("counts %+v, finalizer %q", j.RequestCounts, j.Finalizer)
		}
		return err
	})
	if left, _ := filepath.Glob(filepath.Join(tmp, "largeforge-results-*")); unnamed && len(left) > 0 {
		t.Errorf("spool files with names while assembling: %v", left)
	}
	kill()
	if left, _ := filepath.Glob(filepath.Join(tmp, "largeforge-results-*")); len(left) > 0 {
		t.Errorf("spool left by a killed sink: %v", left)
	}
}

// blockingStore holds every Put of a final file until its ctx ends, and
// says so on puts and cancelled.
type blockingStore struct {
	storage.Store
	puts      chan string
	cancelled chan string
}

func (b *blockingStore) Put(ctx context.Context, key string, write func(io.Writer) error) (storage.Info, error) {
	if !strings.Contains(key, "/parts/") {
		b.puts <- key
		<-ctx.Done()
		b.cancelled <- key
		return storage.Info{}, ctx.Err()
	}
	return b.Store.Put(ctx, key, write)
}

// A finalizer whose claim is taken from it while it stores the final files
// (its lease renewed meanwhile, but another sink holds the job now) stops
// storing them: nothing is stored under a claim that is not its own.
func TestFinalizerStopsWhenItsClaimIsTaken(t *testing.T) {
	ctx := context.Background()
	e := newObjectsEnv(t)
	ids := e.createJob(t, "taken", 50)
	sctx, cancel := context.WithCancel(ctx)
	bus := pipelinetest.Connect(t, e.srv)
	files, err := storage.OpenObjects(sctx, bus, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	bs := &blockingStore{Store: files, puts: make(chan string, 16), cancelled: make(chan string, 16)}
	w, err := resultsink.StartStore(sctx, bus, bs, resultsink.Options{SweepEvery: 100 * time.Millisecond, MaxWait: 50 * time.Millisecond,
		AckWait: 5 * time.Second, FinalizeLease: 600 * time.Millisecond, ID: "slow"}, pipelinetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = w.Wait() })
	e.publish(t, "taken", ids)
	select {
	case <-bs.puts:
	case <-time.After(pipelinetest.MinWait):
		t.Fatal("no final file stored")
	}
	if _, err := e.store.Update(ctx, "taken", func(j *jobs.Job) error {
		j.Finalizer, j.FinalizerUntil = "thief", time.Now().Add(time.Hour).UnixMilli()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-bs.cancelled:
	case <-time.After(pipelinetest.MinWait):
		t.Fatal("the finalizer went on storing after its claim was taken")
	}
	j, err := e.store.Get(ctx, "taken")
	if err != nil || j.Status != jobs.StatusFinalizing || j.Finalizer != "thief" || j.Outputs.Output != "" {
		t.Fatalf("job %s, finalizer %q, outputs %+v (%v)", j.Status, j.Finalizer, j.Outputs, err)
	}
}

// foreignPart stores rows of ids as the next part of job, the way another
// sink would, and counts them in the job record; release, when not nil,
// holds the upload (its number claimed, no object yet) until closed, and
// claimed is closed once the number is claimed.
func (e *objectsEnv) foreignPart(t *testing.T, job string, ids []string, claimed, release chan struct{}) {
	t.Helper()
	ctx := context.Background()
	parts, err := storage.JobParts(e.files, job)
	if err != nil {
		t.Error(err)
		return
	}
	text, reason := "text", "length"
	rows := make([]resultsink.Row, len(ids))
	for i, id := range ids {
		rows[i] = resultsink.Row{CustomID: id, Job: job, Model: "m", Kind: jobs.KindCompletion, Text: &text, FinishReason: &reason,
			Body: `{"id":"cmpl-` + id + `","object":"text_completion","model":"m","choices":[{"index":0,"text":"text","finish_reason":"length"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}`}
	}
	if _, err := parts.Publish(ctx, func(w io.Writer) error {
		if claimed != nil {
			close(claimed)
			<-release
		}
		pw := parquet.NewGenericWriter[resultsink.Row](w)
		if _, err := pw.Write(rows); err != nil {
			return err
		}
		return pw.Close()
	}); err != nil {
		t.Error(err)
		return
	}
	if _, err := e.store.Update(ctx, job, func(j *jobs.Job) error {
		j.RequestCounts.Completed += len(ids)
		return nil
	}); err != nil {
		t.Error(err)
	}
}

// A catch-up that meets a part still uploading (its number claimed by
// another sink, no object yet) reads the parts after it, and the
// finalization reads that part once it is stored: the first number the
// assembly has not met stays at it.
func TestAssemblyCatchUpPastAPartInFlight(t *testing.T) {
	const total = 300
	e := newObjectsEnv(t)
	ids := e.createJob(t, "inflight", total)
	cs := e.startCountingSinkWith(t, resultsink.Options{SweepEvery: 50 * time.Millisecond, MaxWait: 50 * time.Millisecond,
		AckWait: 5 * time.Second, CatchUpEvery: 50 * time.Millisecond, ID: "s"})
	counted := func(n int) {
		t.Helper()
		pipelinetest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
			j, err := e.store.Get(context.Background(), "inflight")
			if err == nil && (j.RequestCounts.Done() < n || j.Finalizer != "s") {
				err = fmt.Errorf("counts %+v, finalizer %q", j.RequestCounts, j.Finalizer)
			}
			return err
		})
	}
	e.publish(t, "inflight", ids[:100])
	counted(100)
	// Another sink claims the next number and is still uploading.
	claimed, release := make(chan struct{}), make(chan struct{})
	inFlight := make(chan struct{})
	go func() {
		defer close(inFlight)
		e.foreignPart(t, "inflight", ids[100:150], claimed, release)
	}()
	<-claimed
	// It stores one more part after that one: the sink's catch-up reads it.
	e.foreignPart(t, "inflight", ids[150:180], nil, nil)
	after := ""
	pipelinetest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		own := map[string]bool{}
		for _, key := range cs.ownParts("inflight") {
			own[key] = true
		}
		for key, n := range cs.partReads("inflight") {
			if n > 0 && !own[key] {
				after = key
				return nil
			}
		}
		return fmt.Errorf("the sink read no part of the other sink's (reads %v)", cs.partReads("inflight"))
	})
	// The part in flight is stored; the job ends.
	close(release)
	<-inFlight
	e.publish(t, "inflight", ids[180:])
	done := e.waitStatus(t, "inflight", jobs.StatusCompleted, 60*time.Second)
	e.checkOutput(t, done, ids)
	reads := cs.partReads("inflight")
	if reads[after] != 1 {
		t.Errorf("the part after the one in flight (%s) was read %d times", after, reads[after])
	}
}
