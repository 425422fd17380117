package pipeline_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/largeforge/largeforge/internal/benchenv"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

// echoRequest is a request message of the echo workload: a completion
// request line as submit publishes it.
var echoRequest = []byte(`{"custom_id":"b0","prompt":"Once upon a time 17","max_tokens":32,"temperature":0}`)

// BenchmarkClusterEcho measures the bus alone on a three-node loopback
// cluster: LF_BENCH_ECHO_MSGS request messages (default 20000) published to
// LF_REQUESTS, answered by an echo handler (no model) that publishes one
// result to LF_RESULTS per request, and the results consumed and acked, as
// a job's results sink does. It runs once with the topology at three
// replicas and once at one replica, each on a fresh cluster, and reports
// messages/s end to end (first request published to last result acked) of
// both, their ratio (r3_vs_r1; the goal on 2 shared cores is ≥ 0.6), and
// the process CPU seconds of each (the three servers run in the process)
// and their ratio (r3_vs_r1_CPU: the work of a message with one replica
// over its work with three, which other load on the machine moves less
// than the wall-time ratio of two phases run at different moments).
// LF_BENCH_ECHO_ROUNDS=K (default 3) runs K rounds of both phases, their
// order alternating (r3 then r1, r1 then r3, ...), and reports the median of
// each figure over the rounds: on a shared machine one pair of phases moves
// by tens of percent with the load. LF_BENCH_ECHO_PROFILE=DIR writes each
// phase's CPU profile (the workload, not the cluster's start) to
// DIR/echo-r3-<round>.prof and DIR/echo-r1-<round>.prof: where a message's
// work with three replicas goes (not with -test.cpuprofile).
func BenchmarkClusterEcho(b *testing.B) {
	benchenv.Log(b)
	n := pipelinetest.EnvInt("LF_BENCH_ECHO_MSGS", 20000)
	rounds := pipelinetest.EnvInt("LF_BENCH_ECHO_ROUNDS", 3)
	for range b.N {
		fig := benchenv.Figures{}
		for round := 1; round <= rounds; round++ {
			var r3, r1 echoResult
			if round%2 == 1 {
				r3, r1 = echoRun(b, 3, n, round), echoRun(b, 1, n, round)
			} else {
				r1, r3 = echoRun(b, 1, n, round), echoRun(b, 3, n, round)
			}
			fig.Add("r3_msgs/s", float64(n)/r3.wall.Seconds())
			fig.Add("r1_msgs/s", float64(n)/r1.wall.Seconds())
			fig.Add("r3_vs_r1", r1.wall.Seconds()/r3.wall.Seconds())
			fig.Add("r3_vs_r1_CPU", r1.cpu/r3.cpu)
			fig.Add("r3_CPU-s", r3.cpu)
			fig.Add("r1_CPU-s", r1.cpu)
		}
		fig.Report(b)
	}
}

// echoStall is how long the echo workload may go without a new result
// before the benchmark fails: a guard against a hang, not a speed.
const echoStall = 2 * time.Minute

type echoResult struct {
	wall time.Duration
	cpu  float64
}

// echoRun runs the echo workload of n requests on a fresh three-node
// cluster whose topology has the given replica count, and shuts the
// cluster down; round names its profile.
func echoRun(b *testing.B, replicas, n, round int) echoResult {
	b.Helper()
	_, bus, stopCluster := pipelinetest.StartClusterBus(b, 3, replicas)
	defer stopCluster()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()

	const job = "bench"
	reqSubj, _ := pipeline.RequestSubject(job, "echo")
	resSubj, _ := pipeline.ResultSubject(job)
	var echoed sync.Map // result ids seen (a redelivered result counts once)
	results := make(chan struct{}, n)
	reqCfg := pipeline.ConsumerConfig{Stream: pipeline.StreamRequests, Durable: "bench-echo", Stage: "bench", Batch: 256, Prefetch: true}
	echo := newEchoHandler(b, bus, resSubj, reqCfg.Batch*4) // the default MaxAckPending
	sink := pipeline.PerMessage(func(_ context.Context, m pipeline.Msg) error {
		if _, dup := echoed.LoadOrStore(m.ID, true); !dup {
			results <- struct{}{}
		}
		return nil
	})
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var consumers []*pipeline.Consumer
	for _, cc := range []struct {
		cfg pipeline.ConsumerConfig
		h   pipeline.Handler
	}{
		{reqCfg, echo},
		{pipeline.ConsumerConfig{Stream: pipeline.StreamResults, Durable: "bench-results", Stage: "bench", Batch: 256, Prefetch: true}, sink},
	} {
		cons, err := pipeline.NewConsumer(ctx, bus, cc.cfg, cc.h, pipelinetest.Logger(b))
		if err != nil {
			b.Fatal(err)
		}
		consumers = append(consumers, cons)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := cons.Run(runCtx); err != nil && runCtx.Err() == nil {
				b.Errorf("%s: %v", cc.cfg.Durable, err)
			}
		}()
	}
	defer func() {
		stop()
		wg.Wait()
	}()

	// The requests are published while the results come back; a stall in
	// either fails the run with what each side has done.
	defer startEchoProfile(b, replicas, round)()
	start, cpu0 := time.Now(), pipelinetest.CPUSeconds()
	p := bus.NewPublisher(1024)
	pubCtx, stopPub := context.WithCancel(ctx)
	defer stopPub()
	published := make(chan error, 1)
	go func() {
		for i := range n {
			if err := p.Publish(pubCtx, reqSubj, echoRequest, fmt.Sprintf("%s/%d", job, i), nil); err != nil {
				published <- fmt.Errorf("publish request %d: %w", i, err)
				return
			}
		}
		published <- p.Flush(pubCtx)
	}()
	for i := 0; i < n; {
		select {
		case <-results:
			i++
		case err := <-published:
			if err != nil {
				b.Fatalf("replicas %d: %v", replicas, err)
			}
		case <-time.After(echoStall):
			b.Fatalf("replicas %d: %d of %d results after %v, none for %v; publisher %+v; echo %+v; results %+v",
				replicas, i, n, time.Since(start), echoStall, p.Stats(), consumers[0].Stats(), consumers[1].Stats())
		}
	}
	return echoResult{wall: time.Since(start), cpu: pipelinetest.CPUSeconds() - cpu0}
}

// startEchoProfile starts the CPU profile of a phase when
// LF_BENCH_ECHO_PROFILE names a directory, and returns what stops it.
func startEchoProfile(b *testing.B, replicas, round int) (stop func()) {
	b.Helper()
	dir := os.Getenv("LF_BENCH_ECHO_PROFILE")
	if dir == "" {
		return func() {}
	}
	f, err := os.Create(filepath.Join(dir, fmt.Sprintf("echo-r%d-%d.prof", replicas, round)))
	if err != nil {
		b.Fatalf("LF_BENCH_ECHO_PROFILE: %v", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		b.Fatalf("LF_BENCH_ECHO_PROFILE (not with -test.cpuprofile): %v", err)
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			b.Errorf("LF_BENCH_ECHO_PROFILE: %v", err)
		}
	}
}

// echoHandler answers each request of a batch with a result carrying its
// data, published asynchronously with a Nats-Msg-Id: an infer worker's
// handler without a model. Each request's outcome is Deferred to its
// result's publish ack, so the request is acked once the result is stored
// and the consumer handles the next batch meanwhile; the asynchronous window
// is the request consumer's MaxAckPending, which bounds the results awaiting
// their acks.
type echoHandler struct {
	js      jetstream.JetStream
	subject string
}

func newEchoHandler(b testing.TB, bus *pipeline.Bus, subject string, window int) echoHandler {
	b.Helper()
	js, err := jetstream.New(bus.Conn(), jetstream.WithPublishAsyncMaxPending(window),
		jetstream.WithPublishAsyncTimeout(pipeline.DefaultAsyncAckTimeout))
	if err != nil {
		b.Fatal(err)
	}
	return echoHandler{js: js, subject: subject}
}

func (h echoHandler) Handle(ctx context.Context, msgs []pipeline.Msg) []error {
	errs := make([]error, len(msgs))
	for i, m := range msgs {
		res := &nats.Msg{Subject: h.subject, Data: m.Data, Header: nats.Header{jetstream.MsgIDHeader: []string{"res/" + m.ID}}}
		f, err := h.js.PublishMsgAsync(res)
		if err != nil {
			errs[i] = fmt.Errorf("publish result of %s: %w", m.ID, err)
			continue
		}
		errs[i] = pipeline.Deferred(func(ctx context.Context) error {
			select {
			case <-f.Ok():
				return nil
			case err := <-f.Err():
				return fmt.Errorf("publish result of %s: %w", m.ID, err)
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}
	return errs
}
