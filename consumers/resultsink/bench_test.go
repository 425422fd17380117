package resultsink_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"

	"github.com/largeforge/largeforge/consumers/resultsink"
	"github.com/largeforge/largeforge/internal/benchenv"
	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/schemas"
	"github.com/largeforge/largeforge/storage"
)

// assemblyRows is the job size of BenchmarkAssembly: LF_BENCH_ASSEMBLY_ROWS
// (default 100000; 1000000 checks the memory bound of a 1M-row job).
func assemblyRows() int { return benchenv.Int("LF_BENCH_ASSEMBLY_ROWS", 100_000) }

// BenchmarkAssembly stores a job's results as parts of 256 rows, then times
// one sink finalising it: the streaming merge into results.parquet,
// output.jsonl and errors.jsonl. "objects" keeps them in lf_artifacts (an
// embedded server, whose own buffers are in the same heap), "local" in a
// directory (the sink's memory alone). It reports rows/s and the peak heap
// in use during the merge above the heap before it (peak_heap_MB; the GC
// runs at GOGC=10 meanwhile, so the peak is close to what is live), which
// the package comment bounds.
//
// "as_it_goes" is the path a job takes when one sink stores its results: n
// results are published to LF_RESULTS, then a sink (on lf_artifacts) is
// started and timed until the job completes. It reports rows/s end to end
// (storing the parts, counting, assembling the final files as the parts
// are stored), finalize_s (from the last row counted to the job completed:
// the three files stored, no part read again) and the peak heap.
func BenchmarkAssembly(b *testing.B) {
	benchenv.Log(b)
	for _, store := range []string{"local", "objects"} {
		b.Run(store, func(b *testing.B) { benchAssembly(b, store) })
	}
	b.Run("as_it_goes", benchAssemblyAsItGoes)
}

func benchAssemblyAsItGoes(b *testing.B) {
	n := assemblyRows()
	ctx := context.Background()
	body := benchBody()
	for i := range b.N {
		srv, bus := pipelinetest.StartBus(b)
		store, err := jobs.Open(ctx, bus)
		if err != nil {
			b.Fatal(err)
		}
		job := fmt.Sprintf("assembled_%d", i)
		if _, err := store.Create(ctx, jobs.Spec{ID: job, Model: "m"}); err != nil {
			b.Fatal(err)
		}
		ids := make([]string, n)
		for k := range ids {
			ids[k] = fmt.Sprintf("req-%07d", k)
		}
		for c := 0; c*jobs.IDsChunkRows < n; c++ {
			if err := store.PutIDs(ctx, job, c, ids[c*jobs.IDsChunkRows:min((c+1)*jobs.IDsChunkRows, n)]); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := store.Transition(ctx, job, jobs.StatusInProgress, func(j *jobs.Job) { j.RequestCounts.Total = n }); err != nil {
			b.Fatal(err)
		}
		subj, _ := pipeline.ResultSubject(job)
		p := bus.NewPublisher(1024)
		for k, id := range ids {
			r, err := schemas.NewResult(job, id, "m", jobs.KindCompletion, k+1, json.RawMessage(body))
			if err != nil {
				b.Fatal(err)
			}
			data, _ := json.Marshal(r)
			if err := p.Publish(ctx, subj, data, schemas.MsgID(job, id), nil); err != nil {
				b.Fatal(err)
			}
		}
		if err := p.Flush(ctx); err != nil {
			b.Fatal(err)
		}
		sinkBus := pipelinetest.Connect(b, srv)
		files, err := storage.OpenObjects(ctx, sinkBus, b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		heap := measureHeap()
		sctx, stop := context.WithCancel(ctx)
		start := time.Now()
		w, err := resultsink.StartStore(sctx, sinkBus, files, resultsink.Options{}, pipelinetest.Logger(b))
		if err != nil {
			b.Fatal(err)
		}
		var counted time.Duration
		wctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
		j, err := store.Watch(wctx, job, func(j jobs.Job) bool {
			if counted == 0 && j.RequestCounts.Done() >= n {
				counted = time.Since(start)
			}
			return !j.Status.Terminal()
		})
		dur := time.Since(start)
		cancel()
		peakMB := heap()
		stop()
		_ = w.Wait()
		if err != nil || j.Status != jobs.StatusCompleted || j.RequestCounts.Done() != n {
			b.Fatalf("job %s %+v: %v", j.Status, j.RequestCounts, err)
		}
		b.ReportMetric(float64(n)/dur.Seconds(), "rows/s")
		b.ReportMetric((dur - counted).Seconds(), "finalize_s")
		b.ReportMetric(peakMB, "peak_heap_MB")
		b.ReportMetric(float64(n), "rows")
		bus.Close()
	}
}

func benchAssembly(b *testing.B, kind string) {
	n := assemblyRows()
	ctx := context.Background()
	for i := range b.N {
		_, bus := pipelinetest.StartBus(b)
		store, err := jobs.Open(ctx, bus)
		if err != nil {
			b.Fatal(err)
		}
		var files storage.Store
		if kind == "objects" {
			files, err = storage.OpenObjects(ctx, bus, b.TempDir())
		} else {
			files, err = storage.NewLocal(storage.Dirs{Jobs: b.TempDir()})
		}
		if err != nil {
			b.Fatal(err)
		}
		job := fmt.Sprintf("assembly_%d", i)
		if _, err := store.Create(ctx, jobs.Spec{ID: job, Model: "m"}); err != nil {
			b.Fatal(err)
		}
		writeParts(b, files, job, n)
		if _, err := store.Transition(ctx, job, jobs.StatusInProgress, func(j *jobs.Job) {
			j.RequestCounts = jobs.Counts{Total: n, Completed: n - n/10, Failed: n / 10}
		}); err != nil {
			b.Fatal(err)
		}
		sink, err := resultsink.New(files, store, pipelinetest.Logger(b))
		if err != nil {
			b.Fatal(err)
		}
		heap := measureHeap()
		start := time.Now()
		err = sink.Settle(ctx, job)
		dur := time.Since(start)
		peakMB := heap()
		if err != nil {
			b.Fatal(err)
		}
		j, err := store.Get(ctx, job)
		if err != nil || j.Status != jobs.StatusCompleted || j.RequestCounts.Done() != n {
			b.Fatalf("job %s %+v: %v", j.Status, j.RequestCounts, err)
		}
		b.ReportMetric(float64(n)/dur.Seconds(), "rows/s")
		b.ReportMetric(peakMB, "peak_heap_MB")
		b.ReportMetric(float64(n), "rows")
		bus.Close()
	}
}

// measureHeap starts measuring the heap: the function it returns stops and
// returns the peak heap in use meanwhile above the heap before, in MiB. The
// GC runs at GOGC=10 meanwhile, so the peak is close to what is live.
func measureHeap() (stop func() float64) {
	gc := debug.SetGCPercent(10)
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	peak := peakHeap()
	return func() float64 {
		top := peak()
		debug.SetGCPercent(gc)
		return float64(top-min(top, before.HeapInuse)) / (1 << 20)
	}
}

// peakHeap samples the heap in use until the returned function is called,
// which returns the highest sample.
func peakHeap() func() uint64 {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var top uint64
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		var m runtime.MemStats
		for {
			runtime.ReadMemStats(&m)
			top = max(top, m.HeapInuse)
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	return func() uint64 {
		close(stop)
		wg.Wait()
		return top
	}
}

// benchBody is the response body of the benchmark's completion rows.
func benchBody() string {
	return `{"id":"cmpl","object":"text_completion","model":"m","choices":[{"index":0,"text":"` + strings.Repeat("once upon a time ", 12) + `","finish_reason":"length"}],"usage":{"prompt_tokens":8,"completion_tokens":32,"total_tokens":40}}`
}

// writeParts stores n rows of job (one in ten an error) as parts of 256.
func writeParts(b *testing.B, files storage.Store, job string, n int) {
	b.Helper()
	parts, err := storage.JobParts(files, job)
	if err != nil {
		b.Fatal(err)
	}
	body := benchBody()
	text, reason, code, msg := "once upon a time", "length", "invalid_request", "temperature out of range"
	tok := int64(32)
	rows := make([]resultsink.Row, 0, 256)
	for lo := 0; lo < n; lo += 256 {
		rows = rows[:0]
		for i := lo; i < min(lo+256, n); i++ {
			r := resultsink.Row{CustomID: fmt.Sprintf("req-%07d", i), Job: job, Model: "m", Kind: jobs.KindCompletion, Line: int64(i + 1), LatencyMS: 12.5, Worker: "w"}
			if i%10 == 9 {
				r.ErrorCode, r.Error = &code, &msg
			} else {
				r.Text, r.FinishReason, r.CompletionTokens, r.Body = &text, &reason, &tok, body
			}
			rows = append(rows, r)
		}
		if _, err := parts.Publish(context.Background(), func(w io.Writer) error {
			pw := parquet.NewGenericWriter[resultsink.Row](w, parquet.Compression(&parquet.Zstd))
			if _, err := pw.Write(rows); err != nil {
				return err
			}
			return pw.Close()
		}); err != nil {
			b.Fatal(err)
		}
	}
}
