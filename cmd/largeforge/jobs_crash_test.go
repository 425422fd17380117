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
// worker) with SIGKILL in the middle of a batch job, starts it again, and
// checks that the job resumes and completes with every custom_id exactly once.
// It needs `up --model` and the job commands in the binary, and skips until
// they are wired in.
func TestJobCrashSafety(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs a job across a crash")
	}
	modelDir := filepath.Dir(testenv.SharedFile(t, "models/stories260K/model.safetensors"))
	bin := buildBinary(t)
	if out, _ := exec.Command(bin, "up", "--help").CombinedOutput(); !strings.Contains(string(out), "--model") {
		t.Skip("largeforge up has no --model flag yet")
	}
	if err := exec.Command(bin, "submit", "--help").Run(); err != nil {
		t.Skip("largeforge has no submit command yet")
	}
	dir := t.TempDir()
	const n = 150
	src := filepath.Join(dir, "requests.jsonl")
	var lines []string
	for i := range n {
		lines = append(lines, fmt.Sprintf(`{"custom_id":"c%d","prompt":"Once upon a time %d","max_tokens":24,"temperature":0}`, i, i))
	}
	if err := os.WriteFile(src, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
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
	out, err := run("submit", src, "--model", "stories", "--log-level", "error")
	if err != nil {
		t.Fatalf("submit: %v\n%s\nup:\n%s", err, out, up.out)
	}
	id := strings.TrimSpace(strings.Split(out, "\n")[0])
	deadline := time.Now().Add(2 * time.Minute)
	for status(id).RequestCounts.Completed < 10 {
		if time.Now().After(deadline) {
			t.Fatalf("no progress; up:\n%s", up.out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := up.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = up.cmd.Wait()
	up = start(t, bin, env, upArgs...)
	waitUp(t, bin, env)
	t.Logf("killed at %+v", status(id).RequestCounts)
	if j := status(id); j.RequestCounts.Done() >= n {
		t.Fatalf("the job finished before the kill: %+v", j.RequestCounts)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "jobs", "wait", id, "--progress", "off")
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("jobs wait: %v\n%s\nup:\n%s", err, out, up.out)
	}
	j := status(id)
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
