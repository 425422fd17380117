package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/largeforge/largeforge/consumers/resultsink"
	"github.com/largeforge/largeforge/internal/testenv"
	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

// runCLI runs the root command and returns its stdout.
func runCLI(t *testing.T, ctx context.Context, args ...string) (string, error) {
	t.Helper()
	root := newRootCmd()
	root.SetArgs(args)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stdout
	os.Stdout = w
	out := make(chan string)
	go func() {
		var b bytes.Buffer
		_, _ = io.Copy(&b, r)
		out <- b.String()
	}()
	err = root.ExecuteContext(ctx)
	os.Stdout = old
	w.Close()
	return <-out, err
}

// The job commands against a bus with the job workers of `up` running:
// submit --wait, jobs list/status/results/wait, and cancel of a finished job.
func TestJobCommands(t *testing.T) {
	dir := filepath.Dir(testenv.SharedFile(t, "models/stories260K/model.safetensors"))
	e, bus := pipelinetest.StartBus(t)
	dataDir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	jw, err := startJobWorkers(ctx, bus, dataDir, map[string]string{"stories": dir}, pipelinetest.Logger(t), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		if err := jw.Wait(); err != nil {
			t.Errorf("job workers: %v", err)
		}
	})
	in := filepath.Join(t.TempDir(), "req.jsonl")
	var lines []string
	for i := range 6 {
		lines = append(lines, fmt.Sprintf(`{"custom_id":"q%d","prompt":"Once upon a time","max_tokens":8,"temperature":0}`, i))
	}
	lines = append(lines, `{"custom_id":"bad","prompt":"x","temperature":9}`)
	if err := os.WriteFile(in, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	nats := "--nats=" + e.ClientURL()
	tctx, tcancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer tcancel()

	out, err := runCLI(t, tctx, nats, "--log-level=error", "submit", in, "--model", "stories", "--wait", "--progress", "off")
	if err != nil {
		t.Fatalf("submit: %v\n%s", err, out)
	}
	id := strings.TrimSpace(strings.Split(out, "\n")[0])
	if jobs.ValidID(id) != nil || !strings.HasPrefix(id, "batch_") {
		t.Fatalf("submit printed %q, want a job id", out)
	}
	if out, err = runCLI(t, tctx, nats, "jobs", "list"); err != nil || !strings.Contains(out, id) || !strings.Contains(out, "completed") {
		t.Errorf("jobs list: %v\n%s", err, out)
	}
	if out, err = runCLI(t, tctx, nats, "jobs", "status", id); err != nil || !strings.Contains(out, `"completed": 6`) || !strings.Contains(out, `"failed": 1`) {
		t.Errorf("jobs status: %v\n%s", err, out)
	}
	if out, err = runCLI(t, tctx, nats, "jobs", "wait", id, "--progress", "off"); err != nil {
		t.Errorf("jobs wait: %v\n%s", err, out)
	}
	if out, err = runCLI(t, tctx, nats, "jobs", "results", id); err != nil || strings.Count(out, "\n") != 7 || !strings.Contains(out, "Temperature out of range") {
		t.Errorf("jobs results: %v\n%s", err, out)
	}
	if out, err = runCLI(t, tctx, nats, "jobs", "results", id, "--errors"); err != nil || strings.Count(out, "\n") != 1 {
		t.Errorf("jobs results --errors: %v\n%s", err, out)
	}
	// From another directory: the files come from lf_artifacts, not the sink's data dir.
	elsewhere := t.TempDir()
	pq, jl := filepath.Join(elsewhere, "results.parquet"), filepath.Join(elsewhere, "out.jsonl")
	if out, err = runCLI(t, tctx, nats, "jobs", "results", id, "--format", "parquet", "-o", pq); err != nil {
		t.Errorf("jobs results --format parquet -o: %v\n%s", err, out)
	} else if rows, err := parquet.ReadFile[resultsink.Row](pq); err != nil || len(rows) != 7 {
		t.Errorf("results.parquet: %d rows, %v; want 7", len(rows), err)
	}
	if out, err = runCLI(t, tctx, nats, "jobs", "results", id, "-o", jl); err != nil {
		t.Errorf("jobs results -o: %v\n%s", err, out)
	} else if lines, err := resultsink.ReadOutput(jl); err != nil || len(lines) != 7 {
		t.Errorf("%s: %d lines, %v; want 7", jl, len(lines), err)
	}
	if out, err = runCLI(t, tctx, nats, "jobs", "results", id, "--limit", "2"); err != nil || strings.Count(out, "\n") != 2 {
		t.Errorf("jobs results --limit 2: %v\n%s", err, out)
	}
	if _, err = runCLI(t, tctx, nats, "jobs", "results", id, "--format", "csv"); err == nil {
		t.Errorf("jobs results --format csv succeeded")
	}
	if _, err = runCLI(t, tctx, nats, "jobs", "cancel", id); err == nil {
		t.Errorf("cancel of a completed job succeeded")
	}
	if _, err = runCLI(t, tctx, nats, "submit", filepath.Join(t.TempDir(), "missing.jsonl"), "--model", "stories"); err == nil {
		t.Errorf("submit of a missing file succeeded")
	}
	kv, err := bus.KV(tctx, pipeline.BucketWorkers)
	if err != nil {
		t.Fatal(err)
	}
	pipelinetest.CheckFor(t, time.Minute, 20*time.Millisecond, func() error { // heartbeats are written asynchronously
		keys, err := kv.Keys(tctx)
		if err != nil {
			return err
		}
		if n := len(keys); n != 2 {
			return fmt.Errorf("%d heartbeats in lf_workers, want 2 (the infer and the train worker)", n)
		}
		return nil
	})
}

func TestWorkerConfigValidate(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		cfg     WorkerConfig
		wantErr bool
	}{
		{"infer", WorkerConfig{Role: RoleInfer, Models: map[string]string{"m": dir}}, false},
		{"results", WorkerConfig{Role: RoleResults, DataDir: dir}, false},
		{"infer without models", WorkerConfig{Role: RoleInfer}, true},
		{"model dir missing", WorkerConfig{Role: RoleInfer, Models: map[string]string{"m": filepath.Join(dir, "x")}}, true},
		{"bad model name", WorkerConfig{Role: RoleInfer, Models: map[string]string{"a.b": dir}}, true},
		{"unknown role", WorkerConfig{Role: "trainer"}, true},
		{"train", WorkerConfig{Role: RoleTrain}, false},
		{"adapter", WorkerConfig{Role: RoleInfer, Models: map[string]string{"m": dir}, Adapters: map[string]string{"m": dir}}, false},
		{"adapter without its model", WorkerConfig{Role: RoleInfer, Models: map[string]string{"m": dir}, Adapters: map[string]string{"n": dir}}, true},
		{"adapter dir missing", WorkerConfig{Role: RoleInfer, Models: map[string]string{"m": dir}, Adapters: map[string]string{"m": filepath.Join(dir, "x")}}, true},
		{"from the object store", WorkerConfig{Role: RoleInfer, Models: map[string]string{"m": ""}, ModelCache: dir}, false},
		{"object store without cache", WorkerConfig{Role: RoleInfer, Models: map[string]string{"m": ""}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.cfg.Validate(); (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
		})
	}
	if _, err := parseModels([]string{"a=x", "a=y"}); err == nil {
		t.Error("duplicate --model accepted")
	}
	if m, err := parseModels([]string{"stored"}); err != nil || m["stored"] != "" {
		t.Errorf("bare --model name: %v %v", m, err)
	}
	if _, err := parseModels([]string{"x="}); err == nil {
		t.Error("--model x= accepted")
	}
}
