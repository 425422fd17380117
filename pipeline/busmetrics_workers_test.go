package pipeline_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/schemas"
)

// TestBusCollectorListsDurables: with ConsumersOf, every durable of the
// stream is reported though no configured ref names it (a model whose
// workers are all gone), once though one does, ephemeral readers not; the
// workers gauge counts heartbeats per role and model and reports 0 for the
// workers a durable waits for; every stream reported has its size and age
// limits (0: none).
func TestBusCollectorListsDurables(t *testing.T) {
	_, bus := pipelinetest.StartBus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := bus.JetStream()
	for _, m := range []string{"m1", "gone"} {
		filter, _ := pipeline.RequestFilter(pipeline.AnyToken, m)
		if _, err := js.CreateOrUpdateConsumer(ctx, pipeline.StreamRequests, jetstream.ConsumerConfig{
			Durable: "infer-" + m, FilterSubject: filter, AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
			t.Fatal(err)
		}
		subj, _ := pipeline.RequestSubject("j1", m)
		if _, err := js.Publish(ctx, subj, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	// An ephemeral reader (named, not durable) is no worker's queue.
	eph, _ := pipeline.RequestFilter(pipeline.AnyToken, "peek")
	if _, err := js.CreateOrUpdateConsumer(ctx, pipeline.StreamRequests, jetstream.ConsumerConfig{
		Name: "peek", FilterSubject: eph, AckPolicy: jetstream.AckExplicitPolicy, InactiveThreshold: time.Minute}); err != nil {
		t.Fatal(err)
	}
	workers, err := bus.KV(ctx, pipeline.BucketWorkers)
	if err != nil {
		t.Fatal(err)
	}
	for key, hb := range map[string]schemas.Heartbeat{
		"infer.w1": {ID: "w1", Role: schemas.WorkerInfer, Models: []string{"m1", "other"}},
		"infer.w2": {ID: "w2", Role: schemas.WorkerInfer, Models: []string{"m1"}},
		"train.w3": {ID: "w3", Role: schemas.WorkerTrain},
	} {
		data, _ := json.Marshal(hb)
		if _, err := workers.Put(ctx, key, data); err != nil {
			t.Fatal(err)
		}
	}
	c, err := pipeline.NewBusCollector(bus, pipeline.BusMetricsConfig{
		Consumers:   []pipeline.ConsumerRef{{Stream: pipeline.StreamRequests, Durable: "infer-m1"}},
		ConsumersOf: []string{pipeline.StreamRequests},
		Streams:     []string{pipeline.StreamRequests, pipeline.StreamResults},
		Workers:     true,
		WorkerOf: func(stream, durable string) (string, string, bool) {
			m, ok := strings.CutPrefix(durable, "infer-")
			return schemas.WorkerInfer, m, ok && stream == pipeline.StreamRequests
		},
	}, pipelinetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	got := gathered(t, reg) // fails on a series reported twice
	want := map[string]float64{
		`largeforge_consumer_lag_messages{durable=infer-m1,stream=LF_REQUESTS}`:   1,
		`largeforge_consumer_lag_messages{durable=infer-gone,stream=LF_REQUESTS}`: 1,
		`largeforge_workers{model=m1,role=infer}`:                                 2,
		`largeforge_workers{model=other,role=infer}`:                              1,
		`largeforge_workers{model=gone,role=infer}`:                               0,
		`largeforge_workers{model=,role=train}`:                                   1,
		`largeforge_stream_max_bytes{stream=LF_REQUESTS}`:                         float64(pipeline.DefaultLimits()[pipeline.StreamRequests].MaxBytes),
		`largeforge_stream_max_age_seconds{stream=LF_REQUESTS}`:                   0,
		`largeforge_stream_max_bytes{stream=LF_RESULTS}`:                          0,
		`largeforge_stream_max_age_seconds{stream=LF_RESULTS}`:                    pipeline.DefaultLimits()[pipeline.StreamResults].MaxAge.Seconds(),
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
		}
	}
	if n := countPrefix(got, "largeforge_consumer_lag_messages"); n != 2 {
		t.Errorf("%d lag series, want the 2 durables (no ephemeral reader): %v", n, got)
	}
}

func countPrefix(m map[string]float64, prefix string) int {
	n := 0
	for k := range m {
		if strings.HasPrefix(k, prefix+"{") {
			n++
		}
	}
	return n
}
