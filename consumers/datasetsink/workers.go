package datasetsink

import (
	"context"
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"github.com/largeforge/largeforge/dataset"
	"github.com/largeforge/largeforge/logging"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/schemas"
	"github.com/largeforge/largeforge/storage"
)

// Workers are the running dataset consumers: the sink of shards, the
// validator of raw records and the writer of rejects.
type Workers struct {
	*pipeline.Group
	Sink *Sink
}

// ShardLoops is how many batches of shards a sink works on at once. Its
// state is held only between the CPU-heavy steps of a batch
// (Sink.handleShards), so more loops overlap one batch's decoding and
// claim with another's Parquet encoding and upload; on 2 cores
// BenchmarkIngestAlpaca is CPU-bound and 2 loops were no faster, at about
// 90 MB more peak RSS, so one.
const ShardLoops = 1

// Durable consumer names.
const (
	DurableSink    = schemas.DatasetSinkDurable
	DurableRaw     = "dataset-raw"
	DurableRejects = "dataset-rejects"
)

// Start is StartStore on a local store whose datasets are in datasetsDir
// (<data-dir>/datasets).
func Start(ctx context.Context, bus *pipeline.Bus, datasetsDir string, log zerolog.Logger, m *dataset.Metrics) (*Workers, error) {
	store, err := storage.NewLocal(storage.Dirs{Datasets: datasetsDir})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidOption, err)
	}
	return StartStore(ctx, bus, store, log, m)
}

// StartStore starts the three dataset consumers on bus, writing the datasets
// of store, with manifests in lf_datasets and record ids in lf_dedupe, so
// that any number of sinks may run. They run until ctx ends, then drain;
// Wait returns then.
func StartStore(ctx context.Context, bus *pipeline.Bus, store storage.Store, log zerolog.Logger, m *dataset.Metrics) (*Workers, error) {
	kv, err := bus.KV(ctx, pipeline.BucketDatasets)
	if err != nil {
		return nil, err
	}
	shared, err := bus.KV(ctx, pipeline.BucketDedupe)
	if err != nil {
		return nil, err
	}
	sink, err := New(store, kv, shared, logging.Named(log, "largeforge.dataset-sink"), m)
	if err != nil {
		return nil, err
	}
	raw, err := NewRawHandler(bus, logging.Named(log, "largeforge.ingest.raw"), sink.metrics)
	if err != nil {
		return nil, err
	}
	specs := []struct {
		cfg   pipeline.ConsumerConfig
		h     pipeline.Handler
		loops int
	}{
		{pipeline.ConsumerConfig{Stream: pipeline.StreamDatasets, Durable: DurableSink, FilterSubjects: []string{"lf.data.*.shard"},
			Stage: "sink", Batch: 32, MaxWait: 300 * time.Millisecond, AckWait: 15 * time.Second}, sink.Shards(), ShardLoops},
		{pipeline.ConsumerConfig{Stream: pipeline.StreamDatasets, Durable: DurableRaw, FilterSubjects: []string{"lf.data.*.raw"},
			Stage: schemas.StageIngest, Batch: 256, MaxWait: 200 * time.Millisecond, AckWait: 15 * time.Second}, raw, 1},
		{pipeline.ConsumerConfig{Stream: pipeline.StreamDLQ, Durable: DurableRejects, FilterSubjects: []string{"lf.dlq.ingest.>"},
			Stage: "rejects", Batch: 256, MaxWait: 300 * time.Millisecond, AckWait: 15 * time.Second}, sink.Rejects(), 1},
	}
	consumers := make([]*pipeline.Consumer, len(specs))
	loops := make([]int, len(specs))
	for i, s := range specs {
		if consumers[i], err = pipeline.NewConsumer(ctx, bus, s.cfg, s.h, log); err != nil {
			return nil, err
		}
		loops[i] = s.loops
	}
	stray, err := NewStrayConsumer(ctx, bus, log)
	if err != nil {
		return nil, err
	}
	consumers, loops = append(consumers, stray), append(loops, 1)
	w := &Workers{Group: pipeline.NewGroup(ctx), Sink: sink}
	for i, c := range consumers {
		w.Consume(c, loops[i])
	}
	return w, nil
}
