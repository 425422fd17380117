package infer_test

import (
	"context"
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
	"github.com/largeforge/largeforge/producers/submit"
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
	return strings.Join(jobLineList(n, maxTokens), "\n")
}

// jobLineList is the n request lines k0..k<n-1>.
func jobLineList(n, maxTokens int) []string {
	var lines []string
	for i := range n {
		lines = append(lines, fmt.Sprintf(`{"custom_id":"k%d","prompt":%q,"max_tokens":%d,"temperature":0}`, i, prompts[i%len(prompts)], maxTokens))
	}
	return lines
}

// openSubmission is a completion job whose input stays open: the submitter
// reads its lines from a named pipe that the test writes. Until close, the
// job is validating (its total unknown), so it cannot complete however fast
// the workers are: a fault injected meanwhile hits a job provably in flight.
type openSubmission struct {
	id   string
	w    *os.File
	done chan error
}

// submitOpen starts the submission of an open job and writes lines to it.
func (s *stack) submitOpen(t *testing.T, lines []string) *openSubmission {
	t.Helper()
	path := filepath.Join(t.TempDir(), "in.jsonl")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	o := &openSubmission{id: jobs.NewID(), done: make(chan error, 1)}
	sub, err := submit.New(context.Background(), s.bus, submit.Config{Model: "stories", Kind: jobs.KindCompletion, JobID: o.id}, pipelinetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		_, err := sub.Submit(context.Background(), path, nil)
		o.done <- err
	}()
	if o.w, err = os.OpenFile(path, os.O_WRONLY, 0); err != nil { // blocks until the submitter opens it
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = o.w.Close() })
	o.write(t, lines)
	return o
}

func (o *openSubmission) write(t *testing.T, lines []string) {
	t.Helper()
	if _, err := o.w.WriteString(strings.Join(lines, "\n") + "\n"); err != nil {
		t.Fatal(err)
	}
}

// close ends the input and waits for the submitter to mark the job in
// progress with its total.
func (o *openSubmission) close(t *testing.T) {
	t.Helper()
	if err := o.w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-o.done; err != nil {
		t.Fatalf("submit: %v", err)
	}
}

// waitInFlight waits until at least n results of the open job are
// persisted and checks that it is still validating.
func waitInFlight(t *testing.T, store *jobs.Store, id string, n int) jobs.Job {
	t.Helper()
	var j jobs.Job
	pipelinetest.CheckFor(t, time.Minute, 10*time.Millisecond, func() error {
		var err error
		if j, err = store.Get(context.Background(), id); err == nil && j.RequestCounts.Completed < n {
			return fmt.Errorf("%d completed", j.RequestCounts.Completed)
		}
		return err
	})
	if j.Status != jobs.StatusValidating {
		t.Fatalf("job %s is %s with its input still open", id, j.Status)
	}
	return j
}

// readRows reads a finished job's results.parquet.
func readRows(t testing.TB, j jobs.Job) []resultsink.Row {
	t.Helper()
	f, err := os.Open(filepath.Join(j.Outputs.LocalDir, resultsink.FileResults))
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
	lines := jobLineList(n, 24)
	job := s.submitOpen(t, lines[:n/2])
	first := startWorkerProcess(t, e, "first")
	j := waitInFlight(t, s.store, job.id, 10)
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = first.Wait()
	t.Logf("killed the worker at %d of the %d requests sent so far", j.RequestCounts.Done(), n/2)
	startWorkerProcess(t, e, "second")
	job.write(t, lines[n/2:]) // only the second worker is alive to take these
	job.close(t)
	j = s.wait(t, job.id, jobs.StatusCompleted)
	workers := checkRows(t, j, n)
	if workers["first"] == 0 || workers["second"] == 0 {
		t.Errorf("rows by worker %v: want both", workers)
	}
}

// Two workers on one model take requests from one queue with no duplicates.
// Both provably work: w2 starts once w1 has results persisted, and the last
// part of the job is sent after w1 has drained and stopped.
func TestTwoWorkers(t *testing.T) {
	s := newStack(t)
	const n = 80
	lines := jobLineList(n, 16)
	job := s.submitOpen(t, lines[:n/2])
	stop1 := s.workerID(t, 4, "w1")
	waitInFlight(t, s.store, job.id, 10)
	s.workerID(t, 4, "w2")
	// Both heartbeat into lf_workers.
	for _, id := range []string{"w1", "w2"} {
		if hb := heartbeatOf(t, s.bus, id); hb.Role != "infer" || hb.ID != id || hb.Capacity != 4 || len(hb.Models) != 1 || hb.Models[0] != "stories" {
			t.Errorf("heartbeat %+v", hb)
		}
	}
	stop1() // drains: what w1 holds is finished or handed back
	job.write(t, lines[n/2:])
	job.close(t)
	j := s.wait(t, job.id, jobs.StatusCompleted)
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
		store, _ := jobs.Open(ctx, bus)
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
	lines := jobLineList(n, 24)
	job := s.submitOpen(t, lines[:n/2])
	waitInFlight(t, store, job.id, 10)
	stop()
	bus, store, stop = startAll()
	defer stop()
	// The first submitter lost its bus with the system; a new one resumes
	// the job with the whole file, as `submit --job-id` does.
	_ = job.w.Close()
	<-job.done
	in := filepath.Join(t.TempDir(), "in.jsonl")
	if err := os.WriteFile(in, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	sub, err := submit.New(context.Background(), bus, submit.Config{Model: "stories", Kind: jobs.KindCompletion, JobID: job.id}, pipelinetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sub.Submit(context.Background(), in, nil); err != nil {
		t.Fatalf("resume: %v", err)
	}
	j := (&stack{bus: bus, store: store}).wait(t, job.id, jobs.StatusCompleted)
	checkRows(t, j, n)
}
