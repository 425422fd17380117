package ingest_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/largeforge/largeforge/dataset"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/producers/ingest"
	"github.com/largeforge/largeforge/schemas"
)

// TestIngestWaitsForTheManifest: `ingest --wait` takes its counts from the
// manifest only once it counts every shard of the run, not as soon as the
// sink's ack floor passes them: a manifest read may come from a replica
// behind the sink's last write, and TestChaos once read the run's entry
// before its shards were counted and took 1,800 stored records for format
// rejects. Here the sink's durable acks the shard with the run's entry
// still empty, and the counts come a little later.
func TestIngestWaitsForTheManifest(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), pipelinetest.MinWait)
	defer cancel()
	_, b := pipelinetest.StartBus(t)
	kv, err := b.KV(ctx, pipeline.BucketDatasets)
	if err != nil {
		t.Fatal(err)
	}
	const ds = "lagging"
	manifest := func(shards, rows int64, run, source string) {
		t.Helper()
		now := time.Now()
		m := dataset.NewManifest(ds, schemas.FormatAlpaca, now)
		src := m.Source(source, run, now)
		src.Shards, src.Rows = shards, rows
		data, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Put(ctx, ds, data); err != nil {
			t.Fatal(err)
		}
	}
	// The sink's durable, acking the shard with the run's entry empty.
	type shard struct{ run, source string }
	acked := make(chan shard, 1)
	c, err := pipeline.NewConsumer(ctx, b, pipeline.ConsumerConfig{Stream: pipeline.StreamDatasets, Durable: ingest.SinkDurable,
		FilterSubjects: []string{"lf.data.*.shard"}, Stage: "sink", Batch: 1, MaxWait: 100 * time.Millisecond},
		pipeline.PerMessage(func(_ context.Context, m pipeline.Msg) error {
			s := shard{m.Header.Get(schemas.HeaderRun), m.Header.Get(schemas.HeaderSource)}
			manifest(0, 0, s.run, s.source)
			acked <- s
			return nil
		}), pipelinetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { _ = c.Run(runCtx) }()

	cfg := ingest.DefaultConfig()
	cfg.Dataset, cfg.Format, cfg.Wait = ds, "alpaca", pipelinetest.MinWait
	in, err := ingest.New(b, cfg, pipelinetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		sum ingest.Summary
		err error
	}
	done := make(chan result, 1)
	go func() {
		sum, err := in.Ingest(ctx, "-", strings.NewReader(`{"instruction":"a","output":"1"}
{"instruction":"b","output":"2"}
{"instruction":"c","output":"3"}
`))
		done <- result{sum, err}
	}()
	var s shard
	select {
	case s = <-acked:
	case r := <-done:
		t.Fatalf("ingest ended before the sink's durable acked its shard: %+v, %v", r.sum, r.err)
	}
	time.Sleep(500 * time.Millisecond) // pacing: ingest looks at the floor and the empty entry meanwhile (the outcome does not depend on it)
	select {
	case r := <-done:
		t.Fatalf("ingest ended before the manifest counted its shard: %+v, %v", r.sum, r.err)
	default:
	}
	manifest(1, 3, s.run, s.source)
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if !r.sum.Confirmed || r.sum.Persisted != 3 || r.sum.Rejected != 0 {
		t.Errorf("summary %+v, want 3 persisted, none rejected, confirmed", r.sum)
	}
}
