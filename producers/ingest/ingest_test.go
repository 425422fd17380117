package ingest_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/producers/ingest"
)

// A shard that fails to publish for good ends the run at once with that
// error, though its source (a pipe on stdin) stays open and sends nothing
// more: before, the run sat reading until more input came, and logged
// nothing (TestClusterNodeLoss (b), its stream leaderless for seconds).
func TestIngestStopsWhenAShardFails(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, b := pipelinetest.StartBus(t)
	// A sealed stream turns every publish away for good.
	s, err := b.JetStream().Stream(ctx, pipeline.StreamDatasets)
	if err != nil {
		t.Fatal(err)
	}
	sc := s.CachedInfo().Config
	sc.Sealed = true
	if _, err := b.JetStream().UpdateStream(ctx, sc); err != nil {
		t.Fatal(err)
	}
	cfg := ingest.DefaultConfig()
	cfg.Dataset, cfg.Format, cfg.ShardBytes, cfg.Wait = "sealed", "alpaca", 900<<10, 0
	in, err := ingest.New(b, cfg, pipelinetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	defer pw.Close()
	done := make(chan error, 1)
	go func() {
		_, err := in.Ingest(ctx, "-", pr)
		done <- err
	}()
	var recs strings.Builder
	// One chunk of the scan (256 rows), 4 KB each: one full shard
	// published, the rest held for the next, then nothing more.
	for i := range 256 {
		fmt.Fprintf(&recs, `{"instruction":"Record %d %s","output":"ok"}`+"\n", i, strings.Repeat("x", 4000))
	}
	if _, err := pw.Write([]byte(recs.String())); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, pipeline.ErrPublisherFailed) {
			t.Fatalf("Ingest = %v, want the publishing failure (ErrPublisherFailed)", err)
		}
	case <-ctx.Done():
		t.Fatal("Ingest still waits for input after its shards failed to publish")
	}
}
