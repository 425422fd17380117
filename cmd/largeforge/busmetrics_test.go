package main

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

// TestBusMetricsOnRoleCredentials: each worker role, and the gateway's,
// reads every bus metric it reports on its own credential of
// deploy/nats-roles.conf (nothing left out for a denied request, and the
// server logs no permissions violation).
func TestBusMetricsOnRoleCredentials(t *testing.T) {
	serverLog := &pipelinetest.Buffer{}
	e, admin := pipelinetest.StartRoles(t, serverLog)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	wc := WorkerConfig{Models: map[string]string{"m": ""}}
	// The durables the workers would create.
	filter := map[string]string{"infer-m": "lf.req.*.m", "train": "lf.train.>", "results-sink": "lf.res.>", "results-dlq": "lf.dlq.infer.>",
		"dataset-sink": "lf.data.*.shard", "dataset-raw": "lf.data.*.raw", "dataset-rejects": "lf.dlq.ingest.>"}
	for _, c := range allBusMetrics(wc).Consumers {
		if filter[c.Durable] == "" {
			t.Fatalf("no filter for durable %s", c.Durable)
		}
		if _, err := admin.JetStream().CreateOrUpdateConsumer(ctx, c.Stream, jetstream.ConsumerConfig{Durable: c.Durable, FilterSubject: filter[c.Durable], AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
			t.Fatalf("create %s/%s: %v", c.Stream, c.Durable, err)
		}
	}
	users := map[string]string{RoleInfer: "infer", RoleTrain: "train", RoleResults: "results", RoleDataset: "datasets", "gateway": "api"}
	for role, user := range users {
		t.Run(role, func(t *testing.T) {
			cfg, reportJobs := busMetricsFor(role, wc)
			if role == "gateway" {
				cfg = pipeline.BusMetricsConfig{Streams: []string{pipeline.StreamRoutes, pipeline.StreamEvents}}
			}
			bus := pipelinetest.ConnectRole(t, e, user, pipelinetest.Logger(t))
			reg := prometheus.NewRegistry()
			if err := registerBusMetrics(ctx, bus, reg, cfg, reportJobs, pipelinetest.Logger(t)); err != nil {
				t.Fatal(err)
			}
			mfs, err := reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]bool{}
			for _, mf := range mfs {
				for _, m := range mf.GetMetric() {
					for _, l := range m.GetLabel() {
						got[mf.GetName()+"/"+l.GetValue()] = true
					}
				}
			}
			var want []string
			for _, c := range cfg.Consumers {
				want = append(want, pipeline.MetricConsumerLag+"/"+c.Durable)
			}
			for _, s := range cfg.Streams {
				want = append(want, pipeline.MetricStreamBytes+"/"+s, pipeline.MetricStreamMaxBytes+"/"+s, pipeline.MetricStreamMaxAge+"/"+s)
			}
			// Every durable of a listed stream, whoever runs its workers; the
			// workers of infer-m, none running (0).
			for _, c := range allBusMetrics(wc).Consumers {
				if slices.Contains(cfg.ConsumersOf, c.Stream) {
					want = append(want, pipeline.MetricConsumerLag+"/"+c.Durable)
				}
			}
			if cfg.Workers {
				want = append(want, pipeline.MetricWorkers+"/m")
			}
			for _, o := range cfg.ObjectStores {
				want = append(want, pipeline.MetricObjectStoreBytes+"/"+o)
			}
			if cfg.DeadLetters {
				want = append(want, pipeline.MetricDeadLetters+"/infer")
			}
			if reportJobs {
				want = append(want, "largeforge_jobs/in_progress")
			}
			for _, w := range want {
				if !got[w] {
					t.Errorf("%s as %s: %s not reported", role, user, w)
				}
			}
		})
	}
	if log := serverLog.String(); strings.Contains(log, "Violation") {
		t.Fatalf("the server logged a permissions violation:\n%s", log)
	}
}
