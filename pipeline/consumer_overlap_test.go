package pipeline_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

// gate is a handler that blocks each batch until released and counts the
// messages it was given.
type gate struct {
	release chan struct{}
	entered chan struct{}
	msgs    atomic.Int64
}

func newGate() *gate { return &gate{release: make(chan struct{}), entered: make(chan struct{}, 100)} }

func (g *gate) Handle(ctx context.Context, msgs []pipeline.Msg) []error {
	g.msgs.Add(int64(len(msgs)))
	g.entered <- struct{}{}
	<-g.release
	return make([]error, len(msgs))
}

// rawFetch pulls once on the durable beside the Consumer and returns how
// many messages it got (settling none: each nakked at once).
func rawFetch(t *testing.T, b *pipeline.Bus, durable string, wait time.Duration) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cons, err := b.JetStream().Consumer(ctx, pipeline.StreamRequests, durable)
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(wait))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for m := range batch.Messages() {
		n++
		_ = m.Nak()
	}
	return n
}

// With Prefetch the next batch is fetched while one is handled, and kept in
// progress while it waits: a puller beside it gets nothing for longer than
// AckWait. When Run ends, the held batch is released at once.
func TestConsumerPrefetchHoldsNextBatch(t *testing.T) {
	_, b := pipelinetest.StartBus(t)
	g := newGate()
	cfg := fastConfig()
	cfg.Batch, cfg.Prefetch = 2, true
	cfg.AckWait, cfg.InProgressEvery = time.Second, 50*time.Millisecond
	// Each batch waits for its second message, whatever the first one's
	// metadata says is pending: the server counts pending messages
	// asynchronously, and on a busy machine the first may say none.
	cfg.Gather = time.Minute
	c := newConsumer(t, b, cfg, g)
	publishRequests(t, b, "jobp", 4)
	stop := runConsumer(t, c)
	<-g.entered
	pipelinetest.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if info := consumerInfo(t, b, pipeline.StreamRequests, "infer"); info.NumAckPending != 4 {
			return fmt.Errorf("%d acks pending, want 4 (the batch handled and the one prefetched); handler has %d, stats %+v", info.NumAckPending, g.msgs.Load(), c.Stats())
		}
		return nil
	})
	// 2.5 AckWaits: a held message not kept in progress would come back.
	if n := rawFetch(t, b, "infer", 2500*time.Millisecond); n != 0 {
		t.Fatalf("a puller beside the consumer got %d messages while the batch was held", n)
	}
	// End Run while the first batch is still handled: the prefetched one is
	// given back, the one handled is drained and acked.
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	pipelinetest.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if s := c.Stats(); s.Released != 2 {
			return fmt.Errorf("stats %+v, want 2 released", s)
		}
		return nil
	})
	close(g.release)
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	if s := c.Stats(); s.Acked != 2 || s.Batches != 1 || s.Nakked != 0 {
		t.Errorf("stats %+v, want the first batch acked alone", s)
	}
	// Released, not left to AckWait: a new loop gets them at once (1 minute AckWait).
	cfg.AckWait, cfg.InProgressEvery = time.Minute, 0
	c2 := newConsumer(t, b, cfg, pipeline.PerMessage(func(context.Context, pipeline.Msg) error { return nil }))
	runConsumer(t, c2)
	pipelinetest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if s := c2.Stats(); s.Acked != 2 {
			return fmt.Errorf("stats %+v", s)
		}
		return nil
	})
	if n := streamMsgs(t, b, pipeline.StreamRequests); n != 0 {
		t.Errorf("%d messages left", n)
	}
	if g.msgs.Load() != 2 {
		t.Errorf("gate handled %d messages, want 2", g.msgs.Load())
	}
}

// A Deferred outcome settles its message when its wait returns, as Handle's
// outcome would have (ack, nak, dead letter), while the next batches are
// handled; the message is kept in progress meanwhile.
func TestConsumerDeferredOutcomes(t *testing.T) {
	_, b := pipelinetest.StartBus(t)
	open := make(chan struct{})
	var handled atomic.Int64
	outcome := map[string]error{
		"jobd/0": nil,
		"jobd/1": errors.New("result store unavailable"),
		"jobd/2": pipeline.Invalid("result rejected", nil),
	}
	h := pipeline.PerMessage(func(_ context.Context, m pipeline.Msg) error {
		handled.Add(1)
		if m.Deliveries > 1 || m.ID == "jobd/3" {
			return nil
		}
		return pipeline.Deferred(func(ctx context.Context) error {
			select {
			case <-open:
				return outcome[m.ID]
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	})
	cfg := fastConfig()
	cfg.Batch = 1
	cfg.AckWait, cfg.InProgressEvery = time.Second, 50*time.Millisecond
	c := newConsumer(t, b, cfg, h)
	runConsumer(t, c)
	publishRequests(t, b, "jobd", 4)
	// Every batch handled while the first three wait.
	pipelinetest.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if s := c.Stats(); s.Batches != 4 || s.Deferred != 3 || s.Acked != 1 {
			return fmt.Errorf("stats %+v, want 4 batches, 3 deferred, 1 acked", s)
		}
		return nil
	})
	// Past AckWait twice with the waits open: kept in progress, nothing redelivered.
	if n := rawFetch(t, b, "infer", 2500*time.Millisecond); n != 0 {
		t.Fatalf("a puller beside the consumer got %d messages while their outcomes were deferred", n)
	}
	close(open)
	pipelinetest.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		s := c.Stats()
		// jobd/1 nakked, redelivered and acked on its 2nd delivery.
		if s.Acked != 3 || s.Nakked != 1 || s.DeadLetter != 1 {
			return fmt.Errorf("stats %+v, want 3 acked, 1 nakked, 1 dead-lettered", s)
		}
		return nil
	})
	if recs := dlqRecords(t, b, "infer", "jobd"); len(recs) != 1 || recs[0].Reason != "result rejected" {
		t.Errorf("dlq records %+v", recs)
	}
	if n := handled.Load(); n != 5 {
		t.Errorf("handled %d messages, want 5 (4 and one redelivery)", n)
	}
}
