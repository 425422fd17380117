package datasetsink_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/largeforge/largeforge/consumers/datasetsink"
	"github.com/largeforge/largeforge/dataset"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/schemas"
	"github.com/largeforge/largeforge/storage"
)

// TestRedeliveredShardCountedOnce: sinks (each a process of its own, on one
// bus) handle shard messages as the consume loop hands them over. A shard
// redelivered to another sink after the first stored and counted it (its
// ack lost) is counted once; the same shard ingested again by a new run
// counts as duplicates; a shard redelivered after a sink stored and
// committed its part but died before its manifest adds that part to the
// manifest instead of leaving it out until a sink reads the parts afresh,
// its records counted as rows, not duplicates.
func TestRedeliveredShardCountedOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const ds, perShard = "redelivered", 5
	store, kv, shared := sinkBuckets(ctx, t)
	newSink := func() *datasetsink.Sink {
		t.Helper()
		s, err := datasetsink.New(store, kv, shared, pipelinetest.Logger(t), nil)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	// msg is shard i's message of run as delivery number deliveries.
	msg := func(i int, run string, deliveries uint64) pipeline.Msg {
		t.Helper()
		recs, ids := shardRecords(i, perShard)
		m := shardMsg(t, ds, run, recs, ids)
		m.Deliveries = deliveries
		return m
	}
	handle := func(s *datasetsink.Sink, m pipeline.Msg) {
		t.Helper()
		for _, err := range s.Shards().Handle(ctx, []pipeline.Msg{m}) {
			if err != nil {
				t.Fatalf("handle %s: %v", m.ID, err)
			}
		}
	}
	// want checks the manifest's rows and duplicates, and the shards
	// counted for run.
	want := func(step string, rows, dups int64, run string, shards int64) {
		t.Helper()
		m := storedManifest(ctx, t, kv, ds)
		var got int64
		for _, src := range m.Sources {
			if src.Run == run {
				got += src.Shards
			}
		}
		if m.Counts.Rows != rows || m.Counts.Duplicates != dups || got != shards {
			t.Errorf("%s: manifest %d rows, %d duplicates, %d shards of %s; want %d, %d, %d", step, m.Counts.Rows, m.Counts.Duplicates, got, run, rows, dups, shards)
		}
	}

	a, b := newSink(), newSink()
	handle(a, msg(0, "run-1", 1))
	want("stored", perShard, 0, "run-1", 1)
	handle(b, msg(0, "run-1", 2)) // a's ack was lost
	want("redelivered to another sink", perShard, 0, "run-1", 1)
	handle(b, msg(0, "run-2", 1)) // ingested again
	want("ingested again", perShard, perShard, "run-2", 1)

	// A sink stores and commits shard 1's part, then dies before its
	// manifest; the shard goes to b, which read the dataset before.
	parts, err := storage.IndexedDatasetParts(store, shared, ds)
	if err != nil {
		t.Fatal(err)
	}
	x, err := storage.NewPartIndex(shared, parts, ds, storage.PartIndexOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Its last row's id is not its record's: a reject.
	recs, ids := shardRecords(1, perShard)
	ids[perShard-1] = ids[0][:63] + "0"
	if ids[perShard-1] == ids[0] {
		ids[perShard-1] = ids[0][:63] + "1"
	}
	m1 := shardMsg(t, ds, "run-1", recs, ids)
	recs, ids = recs[:perShard-1], ids[:perShard-1] // the part: the good rows
	_, claim, err := x.Claim(ctx, ids, []string{m1.ID})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dataset.CreatePart(ctx, parts, claim.Number, schemas.FormatAlpaca, recs, ids, claim.Shards); err != nil {
		t.Fatal(err)
	}
	if err := x.Commit(ctx, claim); err != nil {
		t.Fatal(err)
	}
	want("part stored, manifest not merged", perShard, perShard, "run-1", 1)
	m1.Deliveries = 2
	handle(b, m1)
	want("redelivered after the part", 2*perShard-1, perShard, "run-1", 2)
	if m := storedManifest(ctx, t, kv, ds); m.Counts.Rejected != 1 {
		t.Errorf("redelivered after the part: %d rejected, want 1 (its bad row)", m.Counts.Rejected)
	}
}

// TestRedeliveredRejectStoredOnce: a reject dead-lettered by ingest that
// one sink stored and counted is, redelivered to another sink that read
// the dataset's rejects before, neither stored again nor counted again;
// one whose line a sink stored before dying (its count never merged) is
// counted once and its line not stored again.
func TestRedeliveredRejectStoredOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const ds = "rejected"
	store, kv, shared := sinkBuckets(ctx, t)
	reject := func(i int, deliveries uint64) pipeline.Msg {
		t.Helper()
		rec := schemas.DLQRecord{Reason: "required", Stage: schemas.StageIngest, Subject: "lf.data." + ds + ".raw",
			Headers: map[string][]string{schemas.HeaderRule: {"required"}, schemas.HeaderSource: {"test"}, schemas.HeaderRun: {"run-1"}},
			Data:    []byte(fmt.Sprintf(`{"bad":%d}`, i)), Time: time.Now()}
		data, err := json.Marshal(rec)
		if err != nil {
			t.Fatal(err)
		}
		return pipeline.Msg{Subject: "lf.dlq.ingest." + ds, Data: data, ID: fmt.Sprintf("%s/reject/%d", ds, i), Deliveries: deliveries}
	}
	var sinks []*datasetsink.Sink
	for range 2 {
		s, err := datasetsink.New(store, kv, shared, pipelinetest.Logger(t), nil)
		if err != nil {
			t.Fatal(err)
		}
		sinks = append(sinks, s)
	}
	handle := func(s *datasetsink.Sink, m pipeline.Msg) {
		t.Helper()
		for _, err := range s.Rejects().Handle(ctx, []pipeline.Msg{m}) {
			if err != nil {
				t.Fatalf("handle %s: %v", m.ID, err)
			}
		}
	}
	handle(sinks[1], reject(0, 1)) // the second sink reads the dataset first
	handle(sinks[0], reject(1, 1))
	handle(sinks[1], reject(1, 2)) // the first sink's ack was lost
	// A sink stored reject 2's line and died before its manifest: the
	// redelivery stores no second line and counts the reject once.
	rejects, err := storage.DatasetRejectParts(store, ds)
	if err != nil {
		t.Fatal(err)
	}
	line := fmt.Sprintf(`{"id":%q,"rule":"required"}`+"\n", reject(2, 1).ID)
	if _, err := rejects.Publish(ctx, func(w io.Writer) error { _, err := io.WriteString(w, line); return err }); err != nil {
		t.Fatal(err)
	}
	handle(sinks[1], reject(2, 2))
	var lines []string
	if err := dataset.Rejects(ctx, store, ds, 0, func(line []byte) error { lines = append(lines, string(line)); return nil }); err != nil {
		t.Fatal(err)
	}
	m := storedManifest(ctx, t, kv, ds)
	if len(lines) != 3 || m.Counts.Rejected != 3 {
		t.Errorf("%d reject lines, %d counted; want 3 and 3:\n%s", len(lines), m.Counts.Rejected, lines)
	}
}

// sinkBuckets starts a bus and opens what a sink of StartStore writes:
// lf_artifacts (with lf_claims), lf_datasets and lf_dedupe.
func sinkBuckets(ctx context.Context, t *testing.T) (*storage.Objects, *pipeline.KV, *pipeline.KV) {
	t.Helper()
	_, bus := pipelinetest.StartBus(t)
	store, err := storage.OpenObjects(ctx, bus, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	kv, err := bus.KV(ctx, pipeline.BucketDatasets)
	if err != nil {
		t.Fatal(err)
	}
	shared, err := bus.KV(ctx, pipeline.BucketDedupe)
	if err != nil {
		t.Fatal(err)
	}
	return store, kv, shared
}

// storedManifest is dataset ds's manifest in lf_datasets.
func storedManifest(ctx context.Context, t *testing.T, kv *pipeline.KV, ds string) dataset.Manifest {
	t.Helper()
	e, err := kv.Get(ctx, ds)
	if err != nil {
		t.Fatal(err)
	}
	var m dataset.Manifest
	if err := json.Unmarshal(e.Value, &m); err != nil {
		t.Fatal(err)
	}
	return m
}
