package main

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

	"github.com/largeforge/largeforge/consumers/resultsink"
	"github.com/largeforge/largeforge/internal/testenv"
	"github.com/largeforge/largeforge/jobs"
)

// TestJobCrashSafety kills the embedded process (`largeforge up` with an infer
// worker) and the submitter with SIGKILL in the middle of a batch job, starts
// them again (the submitter resumes with --job-id), and checks that the job
// completes with every custom_id exactly once.
//
// The job is provably in flight at the kill whatever the machine's speed: the
// submitter reads its input from a named pipe that the test fills only in
// part, so the job stays validating (its total unknown, so it cannot
// complete) until after the restart, while the results of the rows already
// sent are persisted.
func TestJobCrashSafety(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs a job across a crash")
	}
	modelDir := filepath.Dir(testenv.SharedFile(t, "models/stories260K/model.safetensors"))
	bin := buildBinary(t)
	dir := t.TempDir()
	const n, before, persisted = 150, 100, 10
	var lines []string
	for i := range n {
		lines = append(lines, fmt.Sprintf(`{"custom_id":"c%d","prompt":"Once upon a time %d","max_tokens":24,"temperature":0}`, i, i))
	}
	src := filepath.Join(dir, "requests.jsonl")
	if err := os.WriteFile(src, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	pipe := filepath.Join(dir, "pipe.jsonl")
	if err := syscall.Mkfifo(pipe, 0o600); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	env := []string{"LARGEFORGE_NATS=nats://127.0.0.1:" + strconv.Itoa(port)}
	dataDir := filepath.Join(dir, "lf-data")
	upArgs := []string{"up", "--data-dir", dataDir, "--listen", "127.0.0.1:" + strconv.Itoa(port), "--model", "stories=" + modelDir,
		"--metrics-addr", "127.0.0.1:0", "--log-format", "json", "--log-level", "warning"}
	run := func(args ...string) (string, error) {
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.Output()
		return string(out), err
	}
	status := func(id string) jobs.Job {
		out, err := run("jobs", "status", id)
		if err != nil {
			t.Fatalf("jobs status: %v", err)
		}
		var j jobs.Job
		if err := json.Unmarshal([]byte(out), &j); err != nil {
			t.Fatalf("jobs status: %v\n%s", err, out)
		}
		return j
	}

	up := start(t, bin, env, upArgs...)
	waitUp(t, bin, env)
	const id = "batch_crash"
	sub := start(t, bin, env, "submit", pipe, "--model", "stories", "--job-id", id, "--log-level", "error")
	w, err := os.OpenFile(pipe, os.O_WRONLY, 0) // blocks until the submitter opens it
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.WriteString(strings.Join(lines[:before], "\n") + "\n"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if out, err := run("jobs", "status", id); err == nil {
			var j jobs.Job
			if json.Unmarshal([]byte(out), &j) == nil && j.RequestCounts.Completed >= persisted {
				if j.Status != jobs.StatusValidating {
					t.Fatalf("job %s with its input still open: %+v", j.Status, j)
				}
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no progress; up:\n%s\nsubmit:\n%s", up.out, sub.out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, p := range []*proc{up, sub} {
		if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = p.cmd.Wait()
	}
	up = start(t, bin, env, upArgs...)
	waitUp(t, bin, env)
	j := status(id)
	t.Logf("killed at %s %+v", j.Status, j.RequestCounts)
	if j.Status != jobs.StatusValidating || j.RequestCounts.Done() >= n {
		t.Fatalf("the job was not in flight at the kill: %s %+v", j.Status, j.RequestCounts)
	}
	if out, err := run("submit", src, "--model", "stories", "--job-id", id, "--log-level", "error"); err != nil {
		t.Fatalf("resume submit: %v\n%s\nup:\n%s", err, out, up.out)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "jobs", "wait", id, "--progress", "off")
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("jobs wait: %v\n%s\nup:\n%s", err, out, up.out)
	}
	j = status(id)
	if j.RequestCounts != (jobs.Counts{Total: n, Completed: n}) {
		t.Errorf("counts %+v", j.RequestCounts)
	}
	rows, err := resultsink.ReadOutput(filepath.Join(dataDir, "jobs", id, resultsink.FileOutput))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, r := range rows {
		if seen[r.CustomID] {
			t.Errorf("custom_id %s twice", r.CustomID)
		}
		seen[r.CustomID] = true
	}
	if len(seen) != n {
		t.Errorf("%d distinct custom_ids, want %d", len(seen), n)
	}
}
