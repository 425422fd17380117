package pipeline_test

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/largeforge/largeforge/pipeline"
)

// A worker: every request is answered with a result published under the same
// id, and only then acked; a request that is not JSON goes to the DLQ.
func ExampleNewConsumer() {
	ctx := context.Background()
	e, err := pipeline.StartEmbedded(ctx, pipeline.EmbeddedConfig{DataDir: exampleDir(), Listen: "127.0.0.1:-1"}, zerolog.Nop())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer e.Shutdown()
	bus, err := pipeline.Connect(ctx, pipeline.ConnConfig{URL: e.ClientURL()}, zerolog.Nop())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer bus.Close()
	if err := bus.EnsureTopology(ctx); err != nil {
		fmt.Println(err)
		return
	}

	handled := make(chan string, 2)
	worker := pipeline.PerMessage(func(ctx context.Context, m pipeline.Msg) error {
		defer func() { handled <- m.ID }()
		if !strings.HasPrefix(string(m.Data), "{") {
			return pipeline.Invalid("request is not JSON", nil)
		}
		job := pipeline.ThirdToken(m.Subject)
		subj, err := pipeline.ResultSubject(job)
		if err != nil {
			return pipeline.Invalid("bad job name", err)
		}
		_, err = bus.Publish(ctx, subj, []byte(`{"text":"..."}`), m.ID, nil)
		return err // transient: nak and retry
	})
	c, err := pipeline.NewConsumer(ctx, bus, pipeline.ConsumerConfig{
		Stream: pipeline.StreamRequests, Durable: "infer", Stage: "infer", MaxWait: 100 * time.Millisecond,
	}, worker, zerolog.Nop())
	if err != nil {
		fmt.Println(err)
		return
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- c.Run(runCtx) }()

	subj, _ := pipeline.RequestSubject("job1", "stories260K")
	_, _ = bus.Publish(ctx, subj, []byte(`{"prompt":"Once"}`), "job1/a", nil)
	_, _ = bus.Publish(ctx, subj, []byte(`Once`), "job1/b", nil)
	fmt.Println(<-handled, <-handled)
	stop()
	fmt.Println(<-done)
	s := c.Stats()
	fmt.Println("acked", s.Acked, "dead-lettered", s.DeadLetter)
	// Output:
	// job1/a job1/b
	// <nil>
	// acked 1 dead-lettered 1
}
