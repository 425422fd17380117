package pipeline_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

func TestConsumerMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m, err := pipeline.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	again, err := pipeline.NewMetrics(reg)
	if err != nil || again.Messages != m.Messages {
		t.Fatalf("second NewMetrics on one registry = %v, %v; want the first metrics", again, err)
	}
	_, b := pipelinetest.StartBus(t)
	h := pipeline.PerMessage(func(ctx context.Context, msg pipeline.Msg) error {
		switch string(msg.Data) {
		case "bad":
			return pipeline.Invalid("bad", nil)
		case "flaky":
			if msg.Deliveries == 1 {
				return errors.New("flaky")
			}
		}
		return nil
	})
	cfg := fastConfig()
	cfg.Metrics = m
	c := newConsumer(t, b, cfg, h)
	runConsumer(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	subj, _ := pipeline.RequestSubject("jobm", "m")
	for _, d := range []string{"ok", "bad", "flaky", "ok"} {
		if _, err := b.Publish(ctx, subj, []byte(d), "", nil); err != nil {
			t.Fatal(err)
		}
	}
	pipelinetest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if s := c.Stats(); s.Acked != 3 || s.DeadLetter != 1 {
			return fmt.Errorf("stats %+v", s)
		}
		return nil
	})
	for outcome, want := range map[string]float64{pipeline.OutcomeAck: 3, pipeline.OutcomeNak: 1, pipeline.OutcomeDeadLetter: 1, pipeline.OutcomeDLQFailed: 0} {
		if got := counterValue(t, m.Messages.WithLabelValues(pipeline.StreamRequests, "infer", outcome)); got != want {
			t.Errorf("pipeline_messages_total{outcome=%q} = %v, want %v", outcome, got, want)
		}
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	found := map[string]bool{}
	for _, mf := range mfs {
		found[mf.GetName()] = true
		if mf.GetName() == "pipeline_batch_seconds" {
			if n := mf.GetMetric()[0].GetHistogram().GetSampleCount(); n == 0 {
				t.Error("pipeline_batch_seconds has no observations")
			}
		}
	}
	for _, name := range []string{"pipeline_messages_total", "pipeline_batch_seconds", "pipeline_batch_size"} {
		if !found[name] {
			t.Errorf("metric %s not gathered", name)
		}
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
