package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/largeforge/largeforge/internal/testenv"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

// submit --wait with no worker serving the model says so once on stderr and
// keeps waiting; a worker started later serves the job and the wait ends well.
func TestSubmitWaitWithoutWorker(t *testing.T) {
	dir := filepath.Dir(testenv.SharedFile(t, "models/stories260K/model.safetensors"))
	e, bus := pipelinetest.StartBus(t)
	in := filepath.Join(t.TempDir(), "req.jsonl")
	if err := os.WriteFile(in, []byte(`{"custom_id":"q","prompt":"Once upon a time","max_tokens":4,"temperature":0}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stderr pipelinetest.Buffer
	root := newRootCmd()
	root.SetErr(&stderr)
	root.SetArgs([]string{"--nats=" + e.ClientURL(), "--log-level=error", "submit", in, "--model", "stories", "--wait", "--progress", "off"})
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()

	const warning = "no live worker serves model stories"
	pipelinetest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		select {
		case err := <-done:
			t.Fatalf("submit --wait returned before any worker started: %v\n%s", err, stderr.String())
		default:
		}
		if !strings.Contains(stderr.String(), warning) {
			return fmt.Errorf("stderr %q does not say %q", stderr.String(), warning)
		}
		return nil
	})

	wctx, wcancel := context.WithCancel(context.Background())
	jw, err := startJobWorkers(wctx, bus, t.TempDir(), map[string]string{"stories": dir}, pipelinetest.Logger(t), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		wcancel()
		if err := jw.Wait(); err != nil {
			t.Errorf("job workers: %v", err)
		}
	})
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("submit --wait: %v\n%s", err, stderr.String())
		}
	case <-ctx.Done():
		t.Fatalf("submit --wait did not end once a worker served the job\n%s", stderr.String())
	}
	if n := strings.Count(stderr.String(), warning); n != 1 {
		t.Errorf("the warning came %d times, want once:\n%s", n, stderr.String())
	}
}
