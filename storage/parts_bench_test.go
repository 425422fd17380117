package storage_test

import (
	"context"
	"testing"
	"time"

	"github.com/largeforge/largeforge/internal/benchenv"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/storage"
	"github.com/largeforge/largeforge/storage/storagetest"
)

// BenchmarkJobPartsList lists one job's 64 parts in an object store that
// also holds LF_BENCH_LIST_OBJECTS (default 20000) parts of other jobs:
// Parts.List, which asks about the job's part numbers (probe_ms), beside
// the store's List of the job's prefix, which reads every object's
// metadata in the bucket (bucket_list_ms, the way parts were listed
// before), and their ratio.
func BenchmarkJobPartsList(b *testing.B) {
	benchenv.Log(b)
	ctx := context.Background()
	_, s, others := storagetest.BusyArtifacts(b)
	const jobParts = 64
	p, err := storage.JobParts(s, "job")
	if err != nil {
		b.Fatal(err)
	}
	for range jobParts {
		if _, err := p.Publish(ctx, writeString("x")); err != nil {
			b.Fatal(err)
		}
	}
	benchPartsList(b, p, s, storage.Job("job")+"parts/", jobParts, others)
}

// BenchmarkDatasetPartsList is BenchmarkJobPartsList for a dataset's 64
// parts numbered by its part index in lf_dedupe (IndexedDatasetParts, as
// the dataset sink and the train worker list them): probe_ms asks about
// the dataset's part numbers, index entries and found parts' states.
func BenchmarkDatasetPartsList(b *testing.B) {
	benchenv.Log(b)
	ctx := context.Background()
	bus, s, others := storagetest.BusyArtifacts(b)
	kv, err := bus.KV(ctx, pipeline.BucketDedupe)
	if err != nil {
		b.Fatal(err)
	}
	const dsParts = 64
	p, err := storage.IndexedDatasetParts(s, kv, "ds")
	if err != nil {
		b.Fatal(err)
	}
	x, err := storage.NewPartIndex(kv, p, "ds", storage.PartIndexOptions{})
	if err != nil {
		b.Fatal(err)
	}
	for i := range dsParts {
		_, c, err := x.Claim(ctx, recordIDs(i, i+1), nil)
		if err == nil {
			_, err = p.Create(ctx, c.Number, writeString("x"))
		}
		if err == nil {
			err = x.Commit(ctx, c)
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	benchPartsList(b, p, s, storage.Dataset("ds")+"part-", dsParts, others)
}

// benchPartsList reports p.List's time (probe_ms) beside the store's List
// of prefix (bucket_list_ms), three rounds each, and their ratio; both
// must find want parts.
func benchPartsList(b *testing.B, p *storage.Parts, s storage.Store, prefix string, want, others int) {
	b.Helper()
	ctx := context.Background()
	for range b.N {
		fig := benchenv.Figures{}
		for range 3 {
			t0 := time.Now()
			list, err := p.List(ctx)
			probe := time.Since(t0)
			if err != nil || len(list) != want {
				b.Fatalf("probe: %d parts, %v", len(list), err)
			}
			t0 = time.Now()
			all, err := s.List(ctx, prefix)
			full := time.Since(t0)
			if err != nil || len(all) != want {
				b.Fatalf("bucket list: %d parts, %v", len(all), err)
			}
			fig.Add("probe_ms", probe.Seconds()*1000)
			fig.Add("bucket_list_ms", full.Seconds()*1000)
			fig.Add("bucket_list_vs_probe", full.Seconds()/probe.Seconds())
		}
		fig.Add("objects", float64(others+want))
		fig.Report(b)
	}
}
