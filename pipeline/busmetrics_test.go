package pipeline_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

// gathered returns reg's samples as "name{label=value,...}" → value.
func gathered(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			sort.Strings(ls)
			out[mf.GetName()+"{"+strings.Join(ls, ",")+"}"] = m.GetGauge().GetValue()
		}
	}
	return out
}

// TestBusCollector: consumer lag and ack pending per durable, dead letters
// per stage (0 for a stage with none), stream and object-store bytes, as
// the bus holds them at the scrape; a durable that does not exist is left
// out, not an error.
func TestBusCollector(t *testing.T) {
	_, bus := pipelinetest.StartBus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := bus.JetStream()
	filter, _ := pipeline.RequestFilter(pipeline.AnyToken, "m1")
	cons, err := js.CreateOrUpdateConsumer(ctx, pipeline.StreamRequests, jetstream.ConsumerConfig{
		Durable: "infer-m1", FilterSubject: filter, AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		subj, _ := pipeline.RequestSubject("j1", "m1")
		if _, err := js.Publish(ctx, subj, []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cons.Fetch(1); err != nil { // one delivered, not acked
		t.Fatal(err)
	}
	for range 2 {
		if err := bus.PublishDLQ(ctx, "infer", "j1", pipeline.DLQRecord{Reason: "boom", Subject: "lf.req.j1.m1", Data: []byte("x")}, ""); err != nil {
			t.Fatal(err)
		}
	}
	objs, err := bus.Objects(ctx, pipeline.BucketArtifacts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := objs.Put(ctx, "datasets/d/part-00000.parquet", strings.NewReader(strings.Repeat("p", 4096))); err != nil {
		t.Fatal(err)
	}
	topo := pipeline.DefaultTopology(1)
	c, err := pipeline.NewBusCollector(bus, pipeline.AllBusMetrics(topo, []pipeline.ConsumerRef{
		{Stream: pipeline.StreamRequests, Durable: "infer-m1"}, {Stream: pipeline.StreamRequests, Durable: "infer-gone"}}), pipelinetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	pipelinetest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		got := gathered(t, reg)
		want := map[string]float64{
			`largeforge_consumer_lag_messages{durable=infer-m1,stream=LF_REQUESTS}`:         2,
			`largeforge_consumer_ack_pending_messages{durable=infer-m1,stream=LF_REQUESTS}`: 1,
			`largeforge_dead_letters{stage=infer}`:                                          2,
			`largeforge_dead_letters{stage=ingest}`:                                         0,
			`largeforge_stream_messages{stream=LF_REQUESTS}`:                                3,
			`largeforge_stream_messages{stream=LF_DLQ}`:                                     2,
		}
		for k, v := range want {
			if g, ok := got[k]; !ok || g != v {
				return fmt.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
			}
		}
		if got[`largeforge_object_store_bytes{bucket=lf_artifacts}`] < 4096 {
			return fmt.Errorf("object store bytes %v, want at least the 4096 put", got[`largeforge_object_store_bytes{bucket=lf_artifacts}`])
		}
		for k := range got {
			if strings.Contains(k, "infer-gone") {
				return fmt.Errorf("a missing durable reported: %s", k)
			}
		}
		return nil
	})
}

func TestNewBusCollectorValidates(t *testing.T) {
	_, bus := pipelinetest.StartBus(t)
	tests := []struct {
		name string
		cfg  pipeline.BusMetricsConfig
	}{
		{name: "consumer without durable", cfg: pipeline.BusMetricsConfig{Consumers: []pipeline.ConsumerRef{{Stream: "LF_REQUESTS"}}}},
		{name: "negative timeout", cfg: pipeline.BusMetricsConfig{Timeout: -time.Second}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := pipeline.NewBusCollector(bus, tc.cfg, pipelinetest.Logger(t)); !errors.Is(err, pipeline.ErrInvalidOption) {
				t.Fatalf("err %v, want ErrInvalidOption", err)
			}
		})
	}
}
