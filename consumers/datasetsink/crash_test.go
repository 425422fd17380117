package datasetsink_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/largeforge/largeforge/consumers/datasetsink"
	"github.com/largeforge/largeforge/dataset"
	"github.com/largeforge/largeforge/dataset/read"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/schemas"
	"github.com/largeforge/largeforge/storage"
)

// TestSinkDiesBetweenPartAndCommit: a sink dies (cancelled hard, by a test
// hook) after publishing a part, before committing its claim in lf_dedupe.
// Its shards go to a second sink, which finds the claim still holding
// their ids, waits out its lease, finds the dead sink's part and commits
// it: every record is stored once, none twice, none lost, and counted once,
// as a row.
func TestSinkDiesBetweenPartAndCommit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, bus := pipelinetest.StartBus(t)
	objects, err := storage.OpenObjects(ctx, bus, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	want := publishShards(ctx, t, bus, "crash", 8, 5)

	start := func(name string) (*datasetsink.Workers, context.CancelFunc) {
		wctx, wcancel := context.WithCancel(ctx)
		w, err := datasetsink.StartStore(wctx, bus, objects, pipelinetest.Logger(t).With().Str("sink", name).Logger(), nil)
		if err != nil {
			wcancel()
			t.Fatal(err)
		}
		return w, wcancel
	}
	dying, kill := start("dying")
	died := make(chan string, 1)
	datasetsink.SetAfterPublish(dying.Sink, func(part string) error {
		kill()
		select {
		case died <- part:
		default:
		}
		return errors.New("killed between the part and its commit")
	})
	var part string
	select {
	case part = <-died:
	case <-ctx.Done():
		t.Fatal("the sink never published a part")
	}
	if err := dying.Wait(); err != nil {
		t.Logf("dead sink: %v", err)
	}
	if _, _, err := objects.Open(ctx, part); err != nil {
		t.Fatalf("the dead sink's part %s: %v", part, err)
	}

	survivor, stop := start("survivor")
	datasetsink.SetClaimLease(survivor.Sink, time.Second)
	t.Cleanup(func() {
		stop()
		if err := survivor.Wait(); err != nil {
			t.Errorf("survivor: %v", err)
		}
	})
	// The survivor took the shards over: its manifest counts the dead
	// sink's part, and the shards' records as rows of their source (the dead
	// sink never counted them), none as a duplicate.
	kv, err := bus.KV(ctx, pipeline.BucketDatasets)
	if err != nil {
		t.Fatal(err)
	}
	pipelinetest.CheckFor(t, time.Minute, 50*time.Millisecond, func() error {
		e, err := kv.Get(ctx, "crash")
		if err != nil {
			return err
		}
		var man dataset.Manifest
		if err := json.Unmarshal(e.Value, &man); err != nil {
			return err
		}
		var srcRows int64
		for _, src := range man.Sources {
			srcRows += src.Rows
		}
		if man.Counts.Rows != int64(len(want)) || man.Counts.Duplicates != 0 || srcRows != int64(len(want)) {
			return fmt.Errorf("manifest: %d rows, %d duplicates, %d rows of its sources; want %d rows (the dead sink's part), no duplicates, every row its source's",
				man.Counts.Rows, man.Counts.Duplicates, srcRows, len(want))
		}
		return nil
	})
	waitRecordsOnce(ctx, t, objects, "crash", len(want))
}

// TestRejectsWhileAPartIsStored: while a batch's part is encoded, uploaded
// and committed, the sink's state is free: a reject dead-lettered then is
// stored (its rejects-NNNNN.jsonl readable) before the part's commit, not
// after the whole batch.
func TestRejectsWhileAPartIsStored(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, bus := pipelinetest.StartBus(t)
	objects, err := storage.OpenObjects(ctx, bus, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(ctx)
	w, err := datasetsink.StartStore(wctx, bus, objects, pipelinetest.Logger(t), nil)
	if err != nil {
		stop()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stop()
		if err := w.Wait(); err != nil {
			t.Errorf("sink: %v", err)
		}
	})
	const ds = "overlap"
	var once sync.Once
	stored := make(chan error, 1)
	datasetsink.SetAfterPublish(w.Sink, func(string) error {
		once.Do(func() {
			rec, id := read.RejectRecord(ds, "run-1", read.Reject{Source: "test", Line: 1, Rule: "json", Error: "line 1: json: bad", Original: []byte("{")})
			if err := bus.PublishDLQ(ctx, schemas.StageIngest, ds, rec, id); err != nil {
				stored <- err
				return
			}
			deadline := time.Now().Add(15 * time.Second)
			for {
				n := 0
				err := dataset.Rejects(ctx, objects, ds, 0, func([]byte) error { n++; return nil })
				if err == nil && n > 0 {
					stored <- nil
					return
				}
				if time.Now().After(deadline) {
					stored <- fmt.Errorf("the reject was not stored while the part was (%d lines, %v)", n, err)
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
		return nil
	})
	want := publishShards(ctx, t, bus, ds, 4, 5)
	select {
	case err := <-stored:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("no part was stored")
	}
	waitRecordsOnce(ctx, t, objects, ds, len(want))
}
