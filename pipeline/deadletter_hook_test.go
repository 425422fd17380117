package pipeline_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

// OnDeadLetter hears of every dead letter, poison or out of deliveries, with
// its record, after the record is on LF_DLQ.
func TestConsumerOnDeadLetter(t *testing.T) {
	_, b := pipelinetest.StartBus(t)
	var mu sync.Mutex
	got := map[string]pipeline.DLQRecord{}
	cfg := fastConfig()
	cfg.MaxDeliver = 2
	cfg.OnDeadLetter = func(ctx context.Context, rec pipeline.DLQRecord) {
		if ctx.Err() != nil {
			t.Errorf("OnDeadLetter got an ended ctx: %v", ctx.Err())
		}
		mu.Lock()
		got[string(rec.Data)] = rec
		mu.Unlock()
	}
	h := pipeline.PerMessage(func(_ context.Context, m pipeline.Msg) error {
		if string(m.Data) == `{"n":0}` {
			return pipeline.Invalid("poison", errors.New("cannot parse"))
		}
		return errors.New("model busy")
	})
	runConsumer(t, newConsumer(t, b, cfg, h))
	publishRequests(t, b, "jobhook", 2)
	pipelinetest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(got) != 2 {
			return fmt.Errorf("%d dead letters heard of, want 2", len(got))
		}
		return nil
	})
	if r := got[`{"n":0}`]; r.Reason != "poison" || r.Deliveries != 1 || r.Subject != "lf.req.jobhook.m" {
		t.Errorf("poison record %+v", r)
	}
	if r := got[`{"n":1}`]; r.Reason != "max deliveries exceeded" || r.Deliveries != 2 {
		t.Errorf("max deliveries record %+v", r)
	}
	if recs := dlqRecords(t, b, "infer", "jobhook"); len(recs) != 2 {
		t.Errorf("%d records on LF_DLQ, want 2", len(recs))
	}
}
