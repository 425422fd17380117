package datasetsink_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/largeforge/largeforge/consumers/datasetsink"
	"github.com/largeforge/largeforge/dataset"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/producers/ingest"
	"github.com/largeforge/largeforge/schemas"
	"github.com/largeforge/largeforge/storage"
)

// TestSinksShareDatasetThroughBus: two dataset sinks, each with a data
// directory of its own (the embedded default: parts in lf_artifacts,
// mirrored locally) and nothing shared but the bus, while two ingest runs
// of overlapping files go at once. Every record lands once in the parts of
// lf_artifacts, which are readable; the manifest in lf_datasets counts
// every part; an export into a third directory holds the same records and
// that manifest; the rejects are objects any machine reads.
func TestSinksShareDatasetThroughBus(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, bus := pipelinetest.StartBus(t)
	objects, err := storage.OpenObjects(ctx, bus, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		local, err := storage.NewLocal(storage.DirsUnder(t.TempDir()))
		if err != nil {
			t.Fatal(err)
		}
		mine, _ := storage.OpenObjects(ctx, bus, t.TempDir())
		store, err := storage.NewMirror(mine, local)
		if err != nil {
			t.Fatal(err)
		}
		wctx, wcancel := context.WithCancel(context.Background())
		w, err := datasetsink.StartStore(wctx, bus, store, pipelinetest.Logger(t).With().Int("sink", i).Logger(), nil)
		if err != nil {
			wcancel()
			t.Fatal(err)
		}
		t.Cleanup(func() {
			wcancel()
			if err := w.Wait(); err != nil {
				t.Errorf("sink %d: %v", i, err)
			}
		})
	}
	// Files a and b share records 300..599; each has a bad line.
	line := func(i int) string { return fmt.Sprintf(`{"instruction":"q%d","output":"a%d"}`, i, i) }
	var a, b []string
	want := map[string]bool{}
	for i := range 900 {
		rec := schemas.Record{Format: schemas.FormatAlpaca, Alpaca: schemas.Alpaca{Instruction: fmt.Sprintf("q%d", i), Output: fmt.Sprintf("a%d", i)}}
		want[rec.ID()] = true
		if i < 600 {
			a = append(a, line(i))
		}
		if i >= 300 {
			b = append(b, line(i))
		}
	}
	a = append(a, `{"instruction":""}`)
	b = append(b, `not json`)
	files := []string{writeLines(t, "a.jsonl", a...), writeLines(t, "b.jsonl", b...)}
	var wg sync.WaitGroup
	for _, f := range files {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cfg := ingest.DefaultConfig()
			cfg.Dataset, cfg.Format, cfg.Wait, cfg.ShardBytes = "shared", "alpaca", time.Minute, 2048
			in, err := ingest.New(bus, cfg, pipelinetest.Logger(t))
			if err != nil {
				t.Error(err)
				return
			}
			if _, err := in.Ingest(ctx, f, nil); err != nil {
				t.Errorf("ingest %s: %v", f, err)
			}
		}()
	}
	wg.Wait()

	waitRecordsOnce(ctx, t, objects, "shared", len(want))
	parts, _ := storage.DatasetParts(objects, "shared")
	kv, _ := bus.KV(ctx, pipeline.BucketDatasets)
	var man dataset.Manifest
	pipelinetest.CheckFor(t, time.Minute, 50*time.Millisecond, func() error {
		e, err := kv.Get(ctx, "shared")
		if err != nil {
			return err
		}
		if err := json.Unmarshal(e.Value, &man); err != nil {
			return err
		}
		list, _ := parts.List(ctx)
		if man.Counts.Rows != int64(len(want)) || len(man.Parts) != len(list) || man.Counts.Rejected != 2 {
			return fmt.Errorf("manifest: %d rows in %d parts, %d rejected; want %d rows in %d parts, 2 rejected",
				man.Counts.Rows, len(man.Parts), man.Counts.Rejected, len(want), len(list))
		}
		return nil
	})

	out := filepath.Join(t.TempDir(), "export")
	if err := dataset.Export(ctx, objects, man, out); err != nil {
		t.Fatal(err)
	}
	exported, err := dataset.ListParts(out)
	if err != nil || len(exported) != len(man.Parts) {
		t.Fatalf("exported %d parts, %v; the manifest has %d", len(exported), err, len(man.Parts))
	}
	var ids []string
	for _, p := range exported {
		_, _, pids, err := dataset.ReadPart(p)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, pids...)
	}
	sort.Strings(ids)
	if len(ids) != len(want) || len(compact(ids)) != len(want) {
		t.Errorf("export holds %d ids (%d distinct), want %d", len(ids), len(compact(ids)), len(want))
	}
	for _, id := range ids {
		if !want[id] {
			t.Errorf("export holds %s, never ingested", id)
		}
	}
	got, err := dataset.ReadManifest(out)
	if err != nil || !reflect.DeepEqual(got.Counts, man.Counts) || len(got.Parts) != len(man.Parts) {
		t.Errorf("exported manifest %+v, %v; want the bus's %+v", got.Counts, err, man.Counts)
	}
	if n := len(rejectLines(t, out)); n != 2 {
		t.Errorf("export holds %d rejects, want 2", n)
	}
	// A forged part: the manifest names bytes the store does not hold.
	forged := man
	forged.Parts = append([]dataset.PartInfo(nil), man.Parts...)
	forged.Parts[0].SHA256 = fmt.Sprintf("%064x", 1)
	bad := filepath.Join(t.TempDir(), "forged")
	if err := dataset.Export(ctx, objects, forged, bad); !errors.Is(err, dataset.ErrBadPart) {
		t.Errorf("export against a forged manifest = %v, want ErrBadPart", err)
	}
	if _, err := os.Stat(filepath.Join(bad, forged.Parts[0].File)); !os.IsNotExist(err) {
		t.Errorf("a part that failed its check was written: %v", err)
	}
}

func compact(sorted []string) []string {
	var out []string
	for i, s := range sorted {
		if i == 0 || s != sorted[i-1] {
			out = append(out, s)
		}
	}
	return out
}
