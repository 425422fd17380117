// Package pipelinetest starts real embedded JetStream servers for tests of any
// package that uses the bus, and holds the polling helper those tests share.
package pipelinetest

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/largeforge/largeforge/pipeline"
)

// Logger returns a logger that writes warnings and errors to t's log.
func Logger(t testing.TB) zerolog.Logger {
	t.Helper()
	return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel).With().Timestamp().Logger()
}

// StartServer starts an embedded JetStream server on a random port with its
// store in t.TempDir(), and shuts it down in t.Cleanup.
func StartServer(t testing.TB) *pipeline.Embedded {
	t.Helper()
	return StartServerWith(t, pipeline.EmbeddedConfig{DataDir: t.TempDir()})
}

// StartServerWith starts an embedded server with cfg (Listen defaults to a
// random port on 127.0.0.1) and shuts it down in t.Cleanup. Shutting it down
// earlier is allowed (restart tests).
func StartServerWith(t testing.TB, cfg pipeline.EmbeddedConfig) *pipeline.Embedded {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:-1"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e, err := pipeline.StartEmbedded(ctx, cfg, Logger(t))
	if err != nil {
		t.Fatalf("start embedded server: %v", err)
	}
	t.Cleanup(e.Shutdown)
	return e
}

// Connect connects to e, closing the connection in t.Cleanup.
func Connect(t testing.TB, e *pipeline.Embedded) *pipeline.Bus {
	t.Helper()
	return ConnectURL(t, e.ClientURL())
}

// ConnectURL connects to url (a server's, or a LatencyProxy's in front of
// one), closing the connection in t.Cleanup.
func ConnectURL(t testing.TB, url string) *pipeline.Bus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := pipeline.Connect(ctx, pipeline.ConnConfig{URL: url, Name: t.Name()}, Logger(t))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(b.Close)
	return b
}

// StartBus starts a server, connects to it and applies the topology.
func StartBus(t testing.TB) (*pipeline.Embedded, *pipeline.Bus) {
	t.Helper()
	e := StartServer(t)
	b := Connect(t, e)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.EnsureTopology(ctx); err != nil {
		t.Fatalf("ensure topology: %v", err)
	}
	return e, b
}

// MinWait is the least time CheckFor waits for its condition.
const MinWait = time.Minute

// CheckFor calls f every sleep until it returns nil, and fails the test with
// f's last error when total has passed.
//
// total is a guard against a hang, never a claim about speed: it is raised
// to MinWait, so a condition that holds eventually passes on a slow or busy
// machine.
func CheckFor(t testing.TB, total, sleep time.Duration, f func() error) {
	t.Helper()
	total = max(total, MinWait)
	deadline := time.Now().Add(total)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(sleep)
	}
	t.Fatalf("condition not met after %v: %v", total, err)
}

// Buffer is a bytes.Buffer that goroutines (a server's, a command's) write
// while a test reads it.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns what was written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
