package storage_test

import (
	"context"
	"testing"
	"time"

	"github.com/largeforge/largeforge/internal/benchenv"
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
	for range b.N {
		fig := benchenv.Figures{}
		for range 3 {
			t0 := time.Now()
			list, err := p.List(ctx)
			probe := time.Since(t0)
			if err != nil || len(list) != jobParts {
				b.Fatalf("probe: %d parts, %v", len(list), err)
			}
			t0 = time.Now()
			all, err := s.List(ctx, storage.Job("job")+"parts/")
			full := time.Since(t0)
			if err != nil || len(all) != jobParts {
				b.Fatalf("bucket list: %d parts, %v", len(all), err)
			}
			fig.Add("probe_ms", probe.Seconds()*1000)
			fig.Add("bucket_list_ms", full.Seconds()*1000)
			fig.Add("bucket_list_vs_probe", full.Seconds()/probe.Seconds())
		}
		fig.Add("objects", float64(others+jobParts))
		fig.Report(b)
	}
}
