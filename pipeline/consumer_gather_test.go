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

// With Gather a batch stays open after its first message and takes those
// published after it began, up to Batch (it ends when Batch have come, not
// at Gather's end): one batch of 5 where Linger would have made a batch of
// the lone first message and another of the rest.
func TestConsumerGatherTakesLaterMessages(t *testing.T) {
	_, b := pipelinetest.StartBus(t)
	var mu sync.Mutex
	var sizes []int
	h := pipeline.HandlerFunc(func(context.Context, pipeline.Msg) error { return nil })
	cfg := fastConfig()
	cfg.Batch, cfg.Gather = 5, time.Minute
	c := newConsumer(t, b, cfg, handlerFunc(func(ctx context.Context, msgs []pipeline.Msg) []error {
		mu.Lock()
		sizes = append(sizes, len(msgs))
		mu.Unlock()
		return pipeline.PerMessage(h).Handle(ctx, msgs)
	}))
	stop := runConsumer(t, c)
	publishRequests(t, b, "jobg", 1)
	// The first message is delivered (the batch has begun) before the rest exist.
	pipelinetest.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		cons, err := b.JetStream().Consumer(ctx, pipeline.StreamRequests, cfg.Durable)
		if err != nil {
			return err
		}
		info, err := cons.Info(ctx)
		if err != nil {
			return err
		}
		if info.NumAckPending != 1 {
			return fmt.Errorf("%d delivered, want 1", info.NumAckPending)
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	subj, _ := pipeline.RequestSubject("jobg", "m")
	for i := 1; i < 5; i++ {
		if _, err := b.Publish(ctx, subj, []byte(`{}`), fmt.Sprintf("jobg/%d", i), nil); err != nil {
			t.Fatal(err)
		}
	}
	pipelinetest.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if s := c.Stats(); s.Acked != 5 {
			return fmt.Errorf("stats %+v, want 5 acked", s)
		}
		return nil
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(sizes) != 1 || sizes[0] != 5 {
		t.Errorf("batches %v, want one of 5", sizes)
	}
}
