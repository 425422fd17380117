package infer_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"

	"github.com/largeforge/largeforge/consumers/infer"
	"github.com/largeforge/largeforge/consumers/resultsink"
	"github.com/largeforge/largeforge/internal/testenv"
	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

// TestWorkerProcess is not a test: it is the worker process of
// TestWorkerKilled, run by re-executing the test binary with LF_WORKER_NATS set.
func TestWorkerProcess(t *testing.T) {
	url := os.Getenv("LF_WORKER_NATS")
	if url == "" {
		t.Skip("helper process of TestWorkerKilled")
	}
	ctx := context.Background()
	bus, err := pipeline.Connect(ctx, pipeline.ConnConfig{URL: url, Name: "worker-process"}, pipelinetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(testenv.SharedFile(t, "models/stories260K/model.safetensors"))
	w, err := infer.StartDirs(ctx, bus, map[string]string{"stories": dir},
		infer.Config{Slots: 4, AckWait: 2 * time.Second, MaxWait: 100 * time.Millisecond, NakDelay: 100 * time.Millisecond, WorkerID: os.Getenv("LF_WORKER_ID")},
		pipelinetest.Logger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println("worker ready")
	_ = w.Wait() // until killed
}

func startWorkerProcess(t *testing.T, url, id string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestWorkerProcess$", "-test.v")
	cmd.Env = append(os.Environ(), "LF_WORKER_NATS="+url, "LF_WORKER_ID="+id)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd
}

func jobLines(n, maxTokens int) string {
	var lines []string
	for i := range n {
		lines = append(lines, fmt.Sprintf(`{"custom_id":"k%d","prompt":%q,"max_tokens":%d,"temperature":0}`, i, prompts[i%len(prompts)], maxTokens))
	}
	return strings.Join(lines, "\n")
}

// readRows reads a finished job's results.parquet.
func readRows(t testing.TB, j jobs.Job) []resultsink.Row {
	t.Helper()
	f, err := os.Open(j.Outputs.Parquet)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	rows, err := parquet.Read[resultsink.Row](f, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

// checkRows checks results.parquet: every custom_id k0..k<n-1> exactly once;
// it returns the workers that wrote rows.
func checkRows(t testing.TB, j jobs.Job, n int) map[string]int {
	t.Helper()
	return checkRowsPrefix(t, j, n, "k")
}

// checkRowsPrefix is checkRows for the custom_ids <prefix>0..<prefix><n-1>.
func checkRowsPrefix(t testing.TB, j jobs.Job, n int, prefix string) map[string]int {
	t.Helper()
	rows := readRows(t, j)
	seen := map[string]bool{}
	workers := map[string]int{}
	for _, r := range rows {
		if seen[r.CustomID] {
			t.Errorf("custom_id %s twice", r.CustomID)
		}
		seen[r.CustomID] = true
		workers[r.Worker]++
		if r.Failed() {
			t.Errorf("row %s failed: %s", r.CustomID, *r.Error)
		}
	}
	for i := range n {
		if !seen[prefix+strconv.Itoa(i)] {
			t.Errorf("custom_id %s%d missing", prefix, i)
		}
	}
	if len(rows) != n {
		t.Errorf("%d rows, want %d", len(rows), n)
	}
	return workers
}

// A worker process killed with SIGKILL mid-job and started again: the job
// completes with no missing and no duplicate custom_id.
func TestWorkerKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	s := newStack(t)
	e := s.bus.Conn().ConnectedUrl()
	const n = 120
	sum := s.submit(t, jobs.KindCompletion, jobLines(n, 24))
	first := startWorkerProcess(t, e, "first")
	ctx := context.Background()
	pipelinetest.CheckFor(t, 60*time.Second, 10*time.Millisecond, func() error {
		j, err := s.store.Get(ctx, sum.Job.ID)
		if err == nil && j.RequestCounts.Completed < 10 {
			return fmt.Errorf("%d completed", j.RequestCounts.Completed)
		}
		return err
	})
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = first.Wait()
	j, _ := s.store.Get(ctx, sum.Job.ID)
	t.Logf("killed the worker at %d of %d", j.RequestCounts.Done(), n)
	if j.RequestCounts.Done() >= n {
		t.Fatalf("the job finished before the kill; make it longer")
	}
	startWorkerProcess(t, e, "second")
	j = s.wait(t, sum.Job.ID, jobs.StatusCompleted)
	workers := checkRows(t, j, n)
	if workers["first"] == 0 || workers["second"] == 0 {
		t.Errorf("rows by worker %v: want both", workers)
	}
}

// Two workers on one model: both work, no duplicates.
func TestTwoWorkers(t *testing.T) {
	s := newStack(t)
	const n = 80
	sum := s.submit(t, jobs.KindCompletion, jobLines(n, 16))
	s.workerID(t, 4, "w1")
	s.workerID(t, 4, "w2")
	// Both heartbeat into lf_workers.
	kv, err := s.bus.KV(context.Background(), pipeline.BucketWorkers)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"w1", "w2"} {
		e, err := kv.Get(context.Background(), infer.HeartbeatKey(id))
		if err != nil {
			t.Fatalf("heartbeat of %s: %v", id, err)
		}
		var hb infer.Heartbeat
		if err := json.Unmarshal(e.Value(), &hb); err != nil || hb.Role != "infer" || hb.ID != id || hb.Capacity != 4 || len(hb.Models) != 1 || hb.Models[0] != "stories" {
			t.Errorf("heartbeat %+v, %v", hb, err)
		}
	}
	j := s.wait(t, sum.Job.ID, jobs.StatusCompleted)
	workers := checkRows(t, j, n)
	if workers["w1"] == 0 || workers["w2"] == 0 {
		t.Errorf("rows by worker %v: want both", workers)
	}
}

// The whole embedded system stopped mid-job (server, workers, sink) and
// started again on the same data directory: the job resumes and completes
// with every row once.
func TestRestartResumes(t *testing.T) {
	if testing.Short() {
		t.Skip("restarts the server")
	}
	storeDir, dataDir := t.TempDir(), t.TempDir()
	m, tok := stories(t)
	startAll := func() (*pipeline.Bus, *jobs.Store, func()) {
		e := pipelinetest.StartServerWith(t, pipeline.EmbeddedConfig{DataDir: storeDir})
		bus := pipelinetest.Connect(t, e)
		ctx, cancel := context.WithCancel(context.Background())
		if err := bus.EnsureTopology(ctx); err != nil {
			t.Fatal(err)
		}
		sink, err := resultsink.Start(ctx, bus, filepath.Join(dataDir, "jobs"), resultsink.Options{SweepEvery: 200 * time.Millisecond, MaxWait: 100 * time.Millisecond}, pipelinetest.Logger(t))
		if err != nil {
			t.Fatal(err)
		}
		w, err := infer.Start(ctx, bus, []infer.ModelInput{{Name: "stories", Model: m, Tok: tok}},
			infer.Config{Slots: 4, AckWait: 2 * time.Second, MaxWait: 100 * time.Millisecond, NakDelay: 100 * time.Millisecond}, pipelinetest.Logger(t), nil)
		if err != nil {
			t.Fatal(err)
		}
		kv, _ := bus.KV(ctx, pipeline.BucketJobs)
		store, _ := jobs.NewStore(kv)
		return bus, store, func() {
			cancel()
			_ = w.Wait()
			_ = sink.Wait()
			bus.Close()
			e.Shutdown()
		}
	}
	bus, store, stop := startAll()
	s := &stack{bus: bus, store: store}
	const n = 100
	sum := s.submit(t, jobs.KindCompletion, jobLines(n, 24))
	ctx := context.Background()
	pipelinetest.CheckFor(t, 60*time.Second, 10*time.Millisecond, func() error {
		j, err := store.Get(ctx, sum.Job.ID)
		if err == nil && j.RequestCounts.Completed < 10 {
			return fmt.Errorf("%d completed", j.RequestCounts.Completed)
		}
		return err
	})
	stop()
	bus, store, stop = startAll()
	defer stop()
	s = &stack{bus: bus, store: store}
	j := s.wait(t, sum.Job.ID, jobs.StatusCompleted)
	checkRows(t, j, n)
}
