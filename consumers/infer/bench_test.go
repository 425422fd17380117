package infer_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/largeforge/largeforge/internal/benchenv"
	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/model"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/schemas"
	"github.com/largeforge/largeforge/serve"
	"github.com/largeforge/largeforge/storage"
)

// benchRequests is the job size of BenchmarkJobThroughput: LF_BENCH_REQUESTS
// (default 10000, the figure).
func benchRequests() int { return benchenv.Int("LF_BENCH_REQUESTS", 10000) }

const (
	benchSlots     = 32
	benchMaxTokens = 32
)

// BenchmarkJobThroughput runs the same generations of stories260K through the
// bus (submit → LF_REQUESTS → infer worker → LF_RESULTS → results sink →
// completed job; the sink stores in lf_artifacts as `up` runs it) and
// in-process on a Batcher of the same size, and reports both throughputs
// and their ratio (bus_vs_inprocess; the target is ≥ 0.9).
// LF_BENCH_JOB_ROUNDS=K (default 5) runs K rounds of both phases, their
// order alternating, logs each round's times, and reports the median of
// each figure over the rounds.
// LF_BENCH_JOB_PROFILE=DIR writes each timed phase's CPU profile there
// (job-inproc.prof, job-bus.prof; the last round's). After the rounds the
// job runs once more with the bus a round trip away (LF_BENCH_JOB_RTT,
// default 2ms, as between machines; see benchBusRTT): its figures have the
// prefix rtt_.
func BenchmarkJobThroughput(b *testing.B) {
	benchenv.Log(b)
	n := benchRequests()
	rounds := benchenv.Int("LF_BENCH_JOB_ROUNDS", 5)
	for range b.N {
		fig := benchenv.Figures{}
		for round := range rounds {
			var in, bus phaseResult
			if round%2 == 0 {
				in, bus = benchInProcess(b, n), benchBus(b, n, fig)
			} else {
				bus = benchBus(b, n, fig)
				in = benchInProcess(b, n)
			}
			if in.tokens != bus.tokens {
				b.Errorf("tokens: in-process %d, bus %d (the same greedy generations)", in.tokens, bus.tokens)
			}
			// Each round's own figures: the machine's speed varies from
			// round to round by more than the bus costs.
			b.Logf("round %d: in-process %.2f s, %.2f CPU-s; bus %.2f s, %.2f CPU-s; bus_vs_inprocess %.3f",
				round+1, in.wall.Seconds(), in.cpu, bus.wall.Seconds(), bus.cpu, in.wall.Seconds()/bus.wall.Seconds())
			fig.Add("inproc_req/s", float64(n)/in.wall.Seconds())
			fig.Add("inproc_tok/s", float64(in.tokens)/in.wall.Seconds())
			fig.Add("bus_req/s", float64(n)/bus.wall.Seconds())
			fig.Add("bus_tok/s", float64(bus.tokens)/bus.wall.Seconds())
			fig.Add("bus_vs_inprocess", in.wall.Seconds()/bus.wall.Seconds())
			// CPU per request, and the ratio that bounds bus_vs_inprocess on
			// a machine whose cores the benchmark has to itself.
			fig.Add("inproc_cpu_ms/req", in.cpu*1000/float64(n))
			fig.Add("bus_vs_inprocess_cpu", in.cpu/bus.cpu)
		}
		if rtt := benchRTT(b); rtt > 0 {
			// Once, after the rounds: the same job with the bus a round
			// trip away. rtt_fed says whether the worker's consume loops
			// still keep every slot busy; the proxy copies every byte in
			// this process, so rtt_req/s is a floor.
			r := benchBusRTT(b, n, rtt, fig)
			b.Logf("bus %v away: %.2f s, %.2f CPU-s (the proxy's copying included)", rtt, r.wall.Seconds(), r.cpu)
			fig.Add("rtt_req/s", float64(n)/r.wall.Seconds())
		}
		fig.Report(b)
	}
}

// phaseResult is what a timed phase of n requests measured: the tokens
// generated, its wall time and the process's CPU seconds meanwhile.
type phaseResult struct {
	tokens int
	wall   time.Duration
	cpu    float64
}

// profilePhase writes the CPU profile of a timed phase to
// $LF_BENCH_JOB_PROFILE/job-<phase>.prof when that is set; the function it
// returns stops it.
func profilePhase(b *testing.B, phase string) (stop func()) {
	b.Helper()
	dir := os.Getenv("LF_BENCH_JOB_PROFILE")
	if dir == "" {
		return func() {}
	}
	f, err := os.Create(filepath.Join(dir, "job-"+phase+".prof"))
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		b.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		_ = f.Close()
	}
}

// benchLines is the input of an n-request job of the benchmark.
func benchLines(n int) string {
	var lines []byte
	for i := range n {
		lines = fmt.Appendf(lines, "{\"custom_id\":\"b%d\",\"prompt\":%q,\"max_tokens\":%d,\"temperature\":0}\n", i, benchPrompt(i), benchMaxTokens)
	}
	return string(lines)
}

func benchPrompt(i int) string { return prompts[i%len(prompts)] + " " + strconv.Itoa(i%97) }

func benchInProcess(b *testing.B, n int) phaseResult {
	b.Helper()
	m, tok := stories(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	bt, err := model.NewBatcher(m, benchSlots)
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = bt.Run(ctx) }()
	gen, err := model.NewTextGenerator(m, tok)
	if err != nil {
		b.Fatal(err)
	}
	run := func(n int) int {
		var wg sync.WaitGroup
		var mu sync.Mutex
		tokens := 0
		sem := make(chan struct{}, 2*benchSlots)
		for i := range n {
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer func() { <-sem; wg.Done() }()
				c := schemas.DefaultCompletionRequest()
				c.Prompt, c.MaxTokens, c.Temperature = benchPrompt(i), benchMaxTokens, 0
				tr, _ := serve.TextRequest(tok, c, 0)
				res, err := gen.Submit(ctx, bt, tr, nil)
				if err != nil {
					b.Error(err)
					return
				}
				mu.Lock()
				tokens += res.CompletionTokens
				mu.Unlock()
			}()
		}
		wg.Wait()
		return tokens
	}
	run(2 * benchSlots) // compile the graphs first
	defer profilePhase(b, "inproc")()
	start, cpu0 := time.Now(), benchenv.CPUSeconds()
	tokens := run(n)
	return phaseResult{tokens: tokens, wall: time.Since(start), cpu: benchenv.CPUSeconds() - cpu0}
}

func benchBus(b *testing.B, n int, fig benchenv.Figures) phaseResult {
	b.Helper()
	return benchJob(b, newStack(b), n, "bus_", fig)
}

// benchRTT is the round trip of the rtt_ phase: LF_BENCH_JOB_RTT (default
// 2ms; 0 leaves the phase out).
func benchRTT(b *testing.B) time.Duration {
	v := os.Getenv("LF_BENCH_JOB_RTT")
	if v == "" {
		return 2 * time.Millisecond
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		b.Fatalf("LF_BENCH_JOB_RTT=%q: not a duration", v)
	}
	return d
}

// benchBusRTT is benchBus with the bus a round trip rtt away, as for a
// worker on another machine: every connection of the stack goes through a
// pipelinetest.LatencyProxy. Its figures have the prefix rtt_.
func benchBusRTT(b *testing.B, n int, rtt time.Duration, fig benchenv.Figures) phaseResult {
	b.Helper()
	e := pipelinetest.StartServer(b)
	addr := pipelinetest.LatencyProxy(b, strings.TrimPrefix(e.ClientURL(), "nats://"), rtt/2)
	bus := pipelinetest.ConnectURL(b, "nats://"+addr)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := bus.EnsureTopology(ctx); err != nil {
		b.Fatal(err)
	}
	return benchJob(b, newStackOn(b, bus), n, "rtt_", fig)
}

// benchJob submits an n-request job to s, starts a worker and waits for the
// job to complete; it adds to fig the job's phases as <prefix>submit_s,
// <prefix>counted_s and <prefix>finalize_s, how well the worker's Batcher
// was fed (see fedSampler), <prefix>cpu_ms/req and <prefix>parts, and
// returns the tokens of the rows, the time from submission to completion
// and the CPU time the process used meanwhile.
func benchJob(b *testing.B, s *stack, n int, prefix string, fig benchenv.Figures) phaseResult {
	b.Helper()
	// The worker runs before the job comes, as in a deployment, and is
	// warmed up as the in-process run is: a job of 2×slots requests
	// through the whole path first (its Batcher's caches, the sink, the
	// bus), outside the timed phases.
	defer s.workerID(b, benchSlots, "bench")()
	warm := s.submit(b, jobs.KindCompletion, benchLines(2*benchSlots))
	s.waitFor(b, warm.Job.ID, jobs.StatusCompleted, 10*time.Minute)
	lines := benchLines(n)
	fed := sampleFed(b, s.reg, benchSlots)
	stopProfile := profilePhase(b, strings.TrimSuffix(prefix, "_"))
	start, cpu0 := time.Now(), benchenv.CPUSeconds()
	sum := s.submit(b, jobs.KindCompletion, lines)
	submitted := time.Since(start)
	// The phases: submission, results (every row counted), finalization.
	var counted time.Duration
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	j, err := s.store.Watch(ctx, sum.Job.ID, func(j jobs.Job) bool {
		if counted == 0 && j.RequestCounts.Done() >= n {
			counted = time.Since(start)
			fed.report(fig, prefix) // while the rows were generated
		}
		return true
	})
	dur, cpu := time.Since(start), benchenv.CPUSeconds()-cpu0
	stopProfile()
	if err != nil || j.Status != jobs.StatusCompleted {
		b.Fatalf("job %s %s: %v", sum.Job.ID, j.Status, err)
	}
	fig.Add(prefix+"submit_s", submitted.Seconds())
	fig.Add(prefix+"counted_s", counted.Seconds())
	fig.Add(prefix+"finalize_s", (dur - counted).Seconds())
	fig.Add(prefix+"cpu_ms/req", cpu*1000/float64(n))
	if parts, err := s.objects.List(ctx, storage.Job(sum.Job.ID)+"parts/"); err == nil {
		fig.Add(prefix+"parts", float64(len(parts))) // the results sink's, each an object to write
	}
	if j.RequestCounts.Completed != n {
		b.Fatalf("counts %+v", j.RequestCounts)
	}
	// Tokens from the rows.
	tokens := 0
	for _, r := range readRows(b, j) {
		if r.CompletionTokens != nil {
			tokens += int(*r.CompletionTokens)
		}
	}
	return phaseResult{tokens: tokens, wall: dur, cpu: cpu}
}
