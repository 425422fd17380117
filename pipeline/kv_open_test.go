package pipeline_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

// TestKVOpenRetries: opening a bucket whose stream info request goes
// unanswered (a cluster electing the stream's leader after a node's loss:
// TestChaos saw an ingest fail on "kv bucket lf_datasets: context deadline
// exceeded") is retried until the answers come back; where the caller set
// no deadline the attempts end after kvOpenWait with the attempt's error.
func TestKVOpenRetries(t *testing.T) {
	defer pipeline.SetKVOpen(100*time.Millisecond, time.Second)()
	e, _ := pipelinetest.StartBus(t) // the topology
	mute := &atomic.Bool{}
	url := muteProxy(t, e.ClientURL(), mute)
	ctx, cancel := context.WithTimeout(context.Background(), pipelinetest.MinWait)
	defer cancel()
	bus, err := pipeline.Connect(ctx, pipeline.ConnConfig{URL: url, Name: t.Name()}, pipelinetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()

	mute.Store(true)
	_, err = bus.KV(context.Background(), pipeline.BucketJobs) // no deadline: kvOpenWait
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("open with every answer lost and no deadline: %v, want a deadline exceeded after kvOpenWait", err)
	}

	done := make(chan error, 1)
	go func() {
		_, err := bus.KV(ctx, pipeline.BucketJobs)
		done <- err
	}()
	time.Sleep(300 * time.Millisecond) // pacing: a few attempts lost (the open succeeds however long this is)
	mute.Store(false)
	if err := <-done; err != nil {
		t.Fatalf("open retried after the answers came back: %v", err)
	}
}
