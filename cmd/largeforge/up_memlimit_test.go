package main

import (
	"context"
	"errors"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/largeforge/largeforge/internal/memlimit"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

// TestUpMemoryLimit: up runs under the soft memory limit --memory-limit
// names (memlimit.Start) while it serves, and puts the earlier one back
// when it stops; a value that is no size is refused naming the flag.
func TestUpMemoryLimit(t *testing.T) {
	t.Setenv("GOMEMLIMIT", "")
	t.Setenv("GOGC", "")
	before := debug.SetMemoryLimit(-1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		root := newRootCmd()
		root.SetArgs([]string{"up", "--data-dir", t.TempDir(), "--listen", "127.0.0.1:-1", "--metrics-addr", "127.0.0.1:0",
			"--log-level", "error", "--memory-limit", "320MiB"})
		done <- root.ExecuteContext(ctx)
	}()
	pipelinetest.CheckFor(t, 60*time.Second, 20*time.Millisecond, func() error {
		select {
		case err := <-done:
			t.Fatalf("up ended: %v", err)
		default:
		}
		if got := debug.SetMemoryLimit(-1); got != 320<<20 {
			return errors.New("limit not set yet")
		}
		return nil
	})
	cancel()
	select {
	case err := <-done:
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Fatalf("up: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("up did not stop")
	}
	if got := debug.SetMemoryLimit(-1); got != before {
		t.Fatalf("limit %d after up stopped, want %d back", got, before)
	}

	err := UpConfig{DataDir: "d", MemoryLimit: "lots"}.Validate()
	if !errors.Is(err, memlimit.ErrInvalid) || !strings.Contains(err.Error(), "--memory-limit") {
		t.Fatalf("--memory-limit lots: %v", err)
	}
}
