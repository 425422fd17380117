package jobs_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/largeforge/largeforge/internal/benchenv"
	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

// BenchmarkList lists LF_BENCH_JOBS (default 2000) jobs of 4 custom_id
// chunks each: Store.List, one pass over the job records (list_ms), beside
// the listing it replaced, every key of lf_jobs and then a Get per job
// (keys_then_gets_ms), and their ratio.
func BenchmarkList(b *testing.B) {
	benchenv.Log(b)
	ctx := context.Background()
	_, bus := pipelinetest.StartBus(b)
	store, err := jobs.Open(ctx, bus)
	if err != nil {
		b.Fatal(err)
	}
	kv, err := bus.KV(ctx, pipeline.BucketJobs)
	if err != nil {
		b.Fatal(err)
	}
	n := benchenv.Int("LF_BENCH_JOBS", 2000)
	for i := range n {
		id := fmt.Sprintf("job%05d", i)
		if _, err := store.Create(ctx, jobs.Spec{ID: id, Model: "m"}); err != nil {
			b.Fatal(err)
		}
		for c := range 4 {
			if err := store.PutIDs(ctx, id, c, []string{fmt.Sprintf("r%d", c)}); err != nil {
				b.Fatal(err)
			}
		}
	}
	for range b.N {
		fig := benchenv.Figures{}
		for range 3 {
			t0 := time.Now()
			list, err := store.List(ctx)
			one := time.Since(t0)
			if err != nil || len(list) != n {
				b.Fatalf("List: %d jobs, %v", len(list), err)
			}
			t0 = time.Now()
			keys, err := kv.Keys(ctx)
			if err != nil {
				b.Fatal(err)
			}
			got := 0
			for _, k := range keys {
				if strings.Contains(k, ".") {
					continue
				}
				if _, err := store.Get(ctx, k); err != nil {
					b.Fatal(err)
				}
				got++
			}
			old := time.Since(t0)
			if got != n {
				b.Fatalf("keys then gets: %d jobs", got)
			}
			fig.Add("list_ms", one.Seconds()*1000)
			fig.Add("keys_then_gets_ms", old.Seconds()*1000)
			fig.Add("keys_then_gets_vs_list", old.Seconds()/one.Seconds())
		}
		fig.Add("jobs", float64(n))
		fig.Report(b)
	}
}
