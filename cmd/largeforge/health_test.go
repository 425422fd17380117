package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

// probe GETs url and returns the status code and body.
func probe(url string) (int, string, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// wantProbe waits until url answers code with a body containing want.
func wantProbe(t *testing.T, url string, code int, want string) {
	t.Helper()
	pipelinetest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		got, body, err := probe(url)
		if err != nil {
			return err
		}
		if got != code || !strings.Contains(body, want) {
			return fmt.Errorf("%s: %d %q, want %d with %q", url, got, body, code, want)
		}
		return nil
	})
}

// TestWorkerProbes runs a real worker (the results sink) with
// --metrics-addr: /health and /ready answer beside /metrics (with the bus
// metrics of its role), /ready only
// once it is connected and its consumers run, and 503 naming the bus when
// the NATS server goes away (while /health stays 200).
func TestWorkerProbes(t *testing.T) {
	e, _ := pipelinetest.StartBus(t)
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	root := newRootCmd()
	root.SetArgs([]string{"worker", "--role", "results", "--nats", e.ClientURL(), "--data-dir", t.TempDir(),
		"--metrics-addr", addr, "--log-level", "error", "--wait-for-nats", "0s"})
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	wantProbe(t, "http://"+addr+"/ready", http.StatusOK, "ready")
	wantProbe(t, "http://"+addr+"/health", http.StatusOK, "ok")
	// Its /metrics has the bus metrics of its role: its durables' lag, the
	// dead letters per stage, the job ages.
	for _, want := range []string{
		`largeforge_consumer_lag_messages{durable="results-sink",stream="LF_RESULTS"} 0`,
		`largeforge_consumer_lag_messages{durable="results-dlq",stream="LF_DLQ"} 0`,
		`largeforge_dead_letters{stage="infer"} 0`,
		`largeforge_stream_bytes{stream="LF_RESULTS"}`,
		`largeforge_job_age_seconds{status="in_progress"} 0`,
	} {
		wantProbe(t, "http://"+addr+"/metrics", http.StatusOK, want)
	}
	e.Shutdown()
	wantProbe(t, "http://"+addr+"/ready", http.StatusServiceUnavailable, "bus: not connected to NATS")
	wantProbe(t, "http://"+addr+"/health", http.StatusOK, "ok")
}

// TestProbesStartingAndStopped: /ready is 503 "starting" before any
// check is added and names a part whose Wait returned.
func TestProbesStartingAndStopped(t *testing.T) {
	pr := newProbes()
	srv := httptest.NewServer(metricsMux(prometheus.NewRegistry(), pr))
	defer srv.Close()
	wantProbe(t, srv.URL+"/ready", http.StatusServiceUnavailable, "starting")
	release := make(chan struct{})
	waited := make(chan error, 1)
	go func() { waited <- waitReady(pr, "worker results", func() error { <-release; return nil }) }()
	wantProbe(t, srv.URL+"/ready", http.StatusOK, "ready")
	close(release)
	if err := <-waited; err != nil {
		t.Fatal(err)
	}
	wantProbe(t, srv.URL+"/ready", http.StatusServiceUnavailable, "worker results: stopped")
}
