package pipeline_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/largeforge/largeforge/internal/benchenv"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

var benchRecord = []byte(`{"instruction":"Summarize the following text","input":"Large language models are neural networks trained on vast amounts of text.","output":"LLMs are neural networks trained on text data."}`)

// BenchmarkPublisher measures the async ingest path: one op is one record
// published with a Nats-Msg-Id and acked by the file store.
func BenchmarkPublisher(b *testing.B) {
	benchenv.Log(b)
	for _, window := range []int{256, 4096} {
		b.Run(fmt.Sprintf("window=%d", window), func(b *testing.B) {
			_, bus := pipelinetest.StartBus(b)
			ctx := context.Background()
			subj, _ := pipeline.DatasetRawSubject("bench")
			p := bus.NewPublisher(window)
			b.SetBytes(int64(len(benchRecord)))
			b.ResetTimer()
			for i := range b.N {
				if err := p.Publish(ctx, subj, benchRecord, fmt.Sprintf("bench/%d", i), nil); err != nil {
					b.Fatal(err)
				}
			}
			if err := p.Flush(ctx); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// BenchmarkPublishSync is one synchronous Publish (a round trip) per op.
func BenchmarkPublishSync(b *testing.B) {
	benchenv.Log(b)
	_, bus := pipelinetest.StartBus(b)
	ctx := context.Background()
	subj, _ := pipeline.DatasetRawSubject("bench")
	b.SetBytes(int64(len(benchRecord)))
	b.ResetTimer()
	for i := range b.N {
		if _, err := bus.Publish(ctx, subj, benchRecord, fmt.Sprintf("bench/%d", i), nil); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkConsume measures the consume loop: one op is one message fetched,
// handled by a no-op handler and acked.
func BenchmarkConsume(b *testing.B) {
	benchenv.Log(b)
	_, bus := pipelinetest.StartBus(b)
	ctx := context.Background()
	subj, _ := pipeline.RequestSubject("bench", "m")
	p := bus.NewPublisher(4096)
	for i := range b.N {
		if err := p.Publish(ctx, subj, benchRecord, fmt.Sprintf("bench/%d", i), nil); err != nil {
			b.Fatal(err)
		}
	}
	if err := p.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	var n int
	h := pipeline.PerMessage(func(context.Context, pipeline.Msg) error {
		n++
		if n == b.N {
			close(done)
		}
		return nil
	})
	c, err := pipeline.NewConsumer(ctx, bus, pipeline.ConsumerConfig{Stream: pipeline.StreamRequests, Durable: "bench", Stage: "bench", Batch: 256}, h, pipelinetest.Logger(b))
	if err != nil {
		b.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	b.ResetTimer()
	go func() { _ = c.Run(rctx) }()
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		b.Fatal("timeout")
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}
