package pipeline_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

// gatedDefer is a handler whose outcomes are Deferred until release lets
// them through, one per call, in the order handled; it counts the messages
// handled and the largest group Handle got.
type gatedDefer struct {
	mu       sync.Mutex
	gates    []chan struct{}
	handled  map[string]int
	maxGroup int
}

func (g *gatedDefer) Handle(_ context.Context, msgs []pipeline.Msg) []error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.maxGroup = max(g.maxGroup, len(msgs))
	errs := make([]error, len(msgs))
	for i, m := range msgs {
		g.handled[m.ID]++
		gate := make(chan struct{})
		g.gates = append(g.gates, gate)
		errs[i] = pipeline.Deferred(func(ctx context.Context) error {
			select {
			case <-gate:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}
	return errs
}

// release lets the next n outcomes through.
func (g *gatedDefer) release(n int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for range n {
		close(g.gates[0])
		g.gates = g.gates[1:]
	}
}

// Deferred outcomes handed back together are settled each as its own wait
// returns: the second message of a batch is acked while the first still
// waits.
func TestConsumerDeferredSettleEach(t *testing.T) {
	_, b := pipelinetest.StartBus(t)
	g := &gatedDefer{handled: map[string]int{}}
	cfg := fastConfig()
	cfg.Batch = 2
	cfg.Gather = 5 * time.Second // the batch is both messages, however slow the machine (Linger trusts the first message's count of those pending: a CI run under load got two batches of one)
	c := newConsumer(t, b, cfg, g)
	publishRequests(t, b, "jobe", 2)
	stop := runConsumer(t, c)
	pipelinetest.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if s := c.Stats(); s.Batches != 1 || s.Deferred != 2 {
			return fmt.Errorf("stats %+v, want one batch of 2 deferred", s)
		}
		return nil
	})
	g.mu.Lock()
	close(g.gates[1]) // the second message's output is durable, the first's not yet
	g.mu.Unlock()
	pipelinetest.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if s := c.Stats(); s.Acked != 1 {
			return fmt.Errorf("stats %+v, want the second acked", s)
		}
		return nil
	})
	g.release(1)
	pipelinetest.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if s := c.Stats(); s.Acked != 2 {
			return fmt.Errorf("stats %+v, want both acked", s)
		}
		return nil
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}
