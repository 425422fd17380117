package infer_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/producers/submit"
)

// TestScale runs a job of LF_SCALE_REQUESTS short completions (skipped when
// unset; the figure is 100000) through submit, one worker and the
// sink in this process, and reports the peak Go heap, which must stay bounded
// whatever the job size.
func TestScale(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("LF_SCALE_REQUESTS"))
	if n <= 0 {
		t.Skip("set LF_SCALE_REQUESTS (e.g. 100000)")
	}
	s := newStack(t)
	p := filepath.Join(t.TempDir(), "big.jsonl")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		fmt.Fprintf(f, "{\"custom_id\":\"s%d\",\"prompt\":%q,\"max_tokens\":2}\n", i, benchPrompt(i))
	}
	f.Close()

	// The live heap, sampled after a collection every 2s, must not grow with
	// the job: it is logged at each tenth of the job.
	var peak atomic.Uint64
	var done atomic.Int64
	stop := make(chan struct{})
	go func() {
		var ms runtime.MemStats
		lastTenth := int64(-1)
		for {
			runtime.GC()
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > peak.Load() {
				peak.Store(ms.HeapAlloc)
			}
			if tenth := done.Load() * 10 / int64(n); tenth != lastTenth {
				lastTenth = tenth
				t.Logf("%3d%% done: live heap %d MiB, system %d MiB", tenth*10, ms.HeapAlloc>>20, ms.Sys>>20)
			}
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Second):
			}
		}
	}()
	defer close(stop)

	start := time.Now()
	s.workerID(t, 32, "scale")
	sub, err := submit.New(context.Background(), s.bus, submit.Config{Model: "stories"}, pipelinetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	sum, err := sub.Submit(context.Background(), p, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("submitted %d rows in %v (%.0f rows/s); peak live heap so far %d MiB", sum.Rows, sum.Elapsed, float64(sum.Rows)/sum.Elapsed.Seconds(), peak.Load()>>20)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	j, err := s.store.Watch(ctx, sum.Job.ID, func(j jobs.Job) bool { done.Store(int64(j.RequestCounts.Done())); return true })
	if err != nil || j.Status != jobs.StatusCompleted {
		t.Fatalf("job %+v: %v", j, err)
	}
	el := time.Since(start)
	t.Logf("%d requests completed in %v (%.0f req/s); peak live Go heap %d MiB (bus, worker, sink and submitter in this process)", n, el, float64(n)/el.Seconds(), peak.Load()>>20)
	checkRowsPrefix(t, j, n, "s")
}
