package datasetsink_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/largeforge/largeforge/consumers/datasetsink"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/producers/ingest"
	"github.com/largeforge/largeforge/storage"
)

// unreachable is a real store whose first lists fail as they do while a
// cluster elects the leader of the object store's stream.
type unreachable struct {
	storage.Store
	fails atomic.Int32
}

func (u *unreachable) List(ctx context.Context, prefix string) ([]storage.Info, error) {
	if u.fails.Add(-1) >= 0 {
		return nil, fmt.Errorf("list objects lf_artifacts: %w", context.DeadlineExceeded)
	}
	return u.Store.List(ctx, prefix)
}

// TestSinkRetriesStoreUnreachable: a dataset whose parts cannot be listed
// yet is a transient failure: its shards are redelivered and stored once
// the store answers, never dead-lettered as if the dataset were invalid
// (a cluster test lost a whole shard that way while a node was down).
func TestSinkRetriesStoreUnreachable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, bus := pipelinetest.StartBus(t)
	objects, err := storage.OpenObjects(ctx, bus, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	store := &unreachable{Store: objects}
	store.fails.Store(2)
	wctx, wcancel := context.WithCancel(context.Background())
	w, err := datasetsink.StartStore(wctx, bus, store, pipelinetest.Logger(t), nil)
	if err != nil {
		wcancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		wcancel()
		if err := w.Wait(); err != nil {
			t.Errorf("sink: %v", err)
		}
	})
	var lines []string
	for i := range 50 {
		lines = append(lines, fmt.Sprintf(`{"instruction":"q%d","output":"a%d"}`, i, i))
	}
	cfg := ingest.DefaultConfig()
	cfg.Dataset, cfg.Format, cfg.Wait = "later", "alpaca", time.Minute
	in, err := ingest.New(bus, cfg, pipelinetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := in.Ingest(ctx, writeLines(t, "in.jsonl", lines...), nil); err != nil {
		t.Fatalf("ingest: %v", err)
	}
	waitRecordsOnce(ctx, t, objects, "later", len(lines))
	if recs := pipelinetest.DLQRecords(t, bus, "lf.dlq.>"); len(recs) != 0 {
		t.Errorf("%d dead letters, want none: %+v", len(recs), recs[0])
	}
	if store.fails.Load() >= 0 {
		t.Errorf("the store's lists did not fail as the test meant")
	}
}
