package datasetsink_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/largeforge/largeforge/consumers/datasetsink"
	"github.com/largeforge/largeforge/dataset"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/schemas"
	"github.com/largeforge/largeforge/storage"
	"github.com/largeforge/largeforge/storage/storagetest"
)

// TestTwoSinksOneDataset: two dataset sinks on one store take the shards of
// one dataset from the shared durable at once. Their parts have names of
// their own (no part replaces another) and hold every record exactly once.
func TestTwoSinksOneDataset(t *testing.T) {
	const shards, perShard = 64, 5
	ctx := context.Background()
	_, bus := pipelinetest.StartBus(t)
	store, err := storage.NewLocal(storage.DirsUnder(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	// Every shard is on the stream before the sinks start, so both fetch at once.
	want := publishShards(ctx, t, bus, "two", shards, perShard)
	for range 2 {
		wctx, cancel := context.WithCancel(ctx)
		w, err := datasetsink.StartStore(wctx, bus, store, pipelinetest.Logger(t), nil)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cancel()
			if err := w.Wait(); err != nil {
				t.Errorf("workers: %v", err)
			}
		})
	}
	waitRecordsOnce(ctx, t, store, "two", len(want))
}

// publishShards publishes shards shards of perShard new alpaca records to
// dataset ds, as ingest does, and returns their ids.
func publishShards(ctx context.Context, t *testing.T, bus *pipeline.Bus, ds string, shards, perShard int) map[string]bool {
	t.Helper()
	want := map[string]bool{}
	for i := range shards {
		recs, ids := shardRecords(i, perShard)
		for _, id := range ids {
			want[id] = true
		}
		m := shardMsg(t, ds, "run-1", recs, ids)
		if _, err := bus.Publish(ctx, m.Subject, m.Data, m.ID, m.Header); err != nil {
			t.Fatal(err)
		}
	}
	return want
}

// shardRecords is shard i of a test dataset: perShard alpaca records and
// their ids.
func shardRecords(i, perShard int) ([]schemas.Record, []string) {
	recs := make([]schemas.Record, perShard)
	ids := make([]string, perShard)
	for j := range recs {
		recs[j] = schemas.Record{Format: schemas.FormatAlpaca, Alpaca: schemas.Alpaca{Instruction: fmt.Sprintf("q%d-%d", i, j), Output: "a"}}
		ids[j] = recs[j].ID()
	}
	return recs, ids
}

// shardMsg is the shard message of run holding recs (with ids) for dataset
// ds, as ingest publishes it and the consume loop hands it over (its first
// delivery).
func shardMsg(t *testing.T, ds, run string, recs []schemas.Record, ids []string) pipeline.Msg {
	t.Helper()
	data, err := dataset.EncodeShard(schemas.FormatAlpaca, recs, ids)
	if err != nil {
		t.Fatal(err)
	}
	subj, _ := pipeline.DatasetShardSubject(ds)
	hdr := pipeline.Header{}
	hdr.Set(schemas.HeaderFormat, string(schemas.FormatAlpaca))
	hdr.Set(schemas.HeaderSource, "test")
	hdr.Set(schemas.HeaderRun, run)
	hdr.Set(schemas.HeaderRows, strconv.Itoa(len(recs)))
	return pipeline.Msg{Subject: subj, Data: data, Header: hdr, ID: dataset.ShardID(ds, ids), Deliveries: 1}
}

// waitRecordsOnce waits until the parts of dataset ds in store hold want
// distinct records, and fails at once when a record is in two parts.
func waitRecordsOnce(ctx context.Context, t *testing.T, store storage.Store, ds string, want int) {
	t.Helper()
	parts, err := storage.DatasetParts(store, ds)
	if err != nil {
		t.Fatal(err)
	}
	pipelinetest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		got, n, err := storagetest.IDsOnce(ctx, parts, func(key string) ([]string, error) {
			_, _, ids, err := dataset.LoadPart(ctx, store, key)
			return ids, err
		})
		if errors.Is(err, storagetest.ErrTwice) {
			t.Fatal(err)
		}
		if err == nil && got != want {
			err = fmt.Errorf("%d of %d records in %d parts", got, want, n)
		}
		return err
	})
}
