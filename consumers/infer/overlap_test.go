package infer_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/largeforge/largeforge/consumers/infer"
	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/model"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

// TestHandleOverlapsFetches: the handler returns a batch at once with its
// outcomes Deferred to the results' publishes, so the continuous consume
// loop (Refill, as the workers run it) fetches the next requests while some
// generate (here: a Batcher not yet running, so nothing generates), up to
// MaxAckPending; nothing is acked before its result is stored, and once the
// Batcher runs the job completes with every row.
func TestHandleOverlapsFetches(t *testing.T) {
	s := newStack(t)
	const n, batch = 6, 2
	var lines string
	for i := range n {
		lines += fmt.Sprintf("{\"custom_id\":\"o%d\",\"prompt\":%q,\"max_tokens\":4,\"temperature\":0}\n", i, benchPrompt(i))
	}
	sum := s.submit(t, jobs.KindCompletion, lines)
	m, tok := stories(t)
	b, err := model.NewBatcher(m, batch)
	if err != nil {
		t.Fatal(err)
	}
	h, err := infer.NewHandler(s.bus, infer.Served{Name: "stories", Model: m, Tok: tok, Batcher: b}, s.store, nil, "overlap", pipelinetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := pipeline.NewConsumer(ctx, s.bus, pipeline.ConsumerConfig{Stream: pipeline.StreamRequests, Durable: infer.Durable("stories"),
		FilterSubjects: []string{"lf.req.*.stories"}, Stage: infer.Stage, Batch: batch, MaxAckPending: n, Refill: batch,
		MaxWait: 100 * time.Millisecond, AckWait: 5 * time.Second}, h, pipelinetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	// Every request is fetched while the first batch cannot generate.
	pipelinetest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if st := c.Stats(); st.Fetched < n {
			return fmt.Errorf("fetched %d of %d", st.Fetched, n)
		}
		return nil
	})
	if st := c.Stats(); st.Acked != 0 || st.Deferred != n {
		t.Fatalf("before generation: %+v, want nothing acked and %d deferred", st, n)
	}
	bctx, bcancel := context.WithCancel(context.Background())
	defer bcancel()
	go func() { _ = b.Run(bctx) }()
	j := s.wait(t, sum.Job.ID, jobs.StatusCompleted)
	if j.RequestCounts.Completed != n {
		t.Fatalf("counts %+v, want %d completed", j.RequestCounts, n)
	}
	pipelinetest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if st := c.Stats(); st.Acked != n {
			return fmt.Errorf("acked %d of %d", st.Acked, n)
		}
		return nil
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
