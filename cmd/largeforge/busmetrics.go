package main

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/largeforge/largeforge/consumers/datasetsink"
	"github.com/largeforge/largeforge/consumers/infer"
	"github.com/largeforge/largeforge/consumers/resultsink"
	trainjobs "github.com/largeforge/largeforge/consumers/train"
	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/schemas"
)

// busMetricsFor is what a worker of role reports of the bus: its own
// durables' lag, the streams and object stores it uses, dead letters; all
// of it readable on the role's credential (deploy/nats-roles.conf). The
// results role reports the job ages too (reportJobs), and, as the one
// process that always runs, every durable of the work queues and the
// workers they wait for: when a model's or the trainer's workers are all
// gone, their own scrapes of its lag are gone with them.
func busMetricsFor(role string, wc WorkerConfig) (cfg pipeline.BusMetricsConfig, reportJobs bool) {
	cfg.DeadLetters = true
	switch role {
	case RoleInfer:
		for _, m := range inferModelNames(wc) {
			cfg.Consumers = append(cfg.Consumers, pipeline.ConsumerRef{Stream: pipeline.StreamRequests, Durable: infer.Durable(m)})
		}
		cfg.Streams = []string{pipeline.StreamRequests}
		cfg.ObjectStores = []string{pipeline.BucketModels}
	case RoleTrain:
		cfg.Consumers = []pipeline.ConsumerRef{{Stream: pipeline.StreamTrain, Durable: trainjobs.Durable}}
		cfg.Streams = []string{pipeline.StreamTrain}
	case RoleResults:
		cfg.Consumers = []pipeline.ConsumerRef{{Stream: pipeline.StreamResults, Durable: resultsink.DurableResults}, {Stream: pipeline.StreamDLQ, Durable: resultsink.DurableDLQ}}
		cfg.Streams = []string{pipeline.StreamResults, pipeline.StreamDLQ, pipeline.StreamRequests, pipeline.StreamTrain}
		cfg.ConsumersOf = []string{pipeline.StreamRequests, pipeline.StreamTrain}
		cfg.Workers, cfg.WorkerOf = true, workerOf
		reportJobs = true
	case RoleDataset:
		cfg.Consumers = []pipeline.ConsumerRef{{Stream: pipeline.StreamDatasets, Durable: datasetsink.DurableSink}, {Stream: pipeline.StreamDatasets, Durable: datasetsink.DurableRaw}, {Stream: pipeline.StreamDLQ, Durable: datasetsink.DurableRejects}}
		cfg.Streams = []string{pipeline.StreamDatasets}
		cfg.ObjectStores = []string{pipeline.BucketArtifacts}
	}
	return cfg, reportJobs
}

// allBusMetrics is what up (admin) reports: every role's durables, every
// stream and object store, dead letters.
func allBusMetrics(wc WorkerConfig) pipeline.BusMetricsConfig {
	var consumers []pipeline.ConsumerRef
	for _, r := range roles() {
		c, _ := busMetricsFor(r.name, wc)
		consumers = append(consumers, c.Consumers...)
	}
	cfg := pipeline.AllBusMetrics(pipeline.DefaultTopology(1), consumers)
	cfg.ConsumersOf = []string{pipeline.StreamRequests, pipeline.StreamTrain}
	cfg.Workers, cfg.WorkerOf = true, workerOf
	return cfg
}

// workerOf names the heartbeating workers of a work queue's durable: an
// infer durable's model, the train durable.
func workerOf(stream, durable string) (role, model string, ok bool) {
	switch {
	case stream == pipeline.StreamRequests && strings.HasPrefix(durable, infer.Durable("")):
		return schemas.WorkerInfer, strings.TrimPrefix(durable, infer.Durable("")), true
	case stream == pipeline.StreamTrain && durable == trainjobs.Durable:
		return schemas.WorkerTrain, "", true
	}
	return "", "", false
}

// inferModelNames are the models and experts an infer worker serves, each
// under its own durable.
func inferModelNames(wc WorkerConfig) []string {
	names := map[string]bool{}
	for n := range wc.Models {
		names[n] = true
	}
	for _, n := range wc.ExpertNames {
		names[n] = true
	}
	for _, e := range wc.Experts {
		names[e.Name] = true
	}
	out := make([]string, 0, len(names))
	for n := range names {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// registerBusMetrics registers the bus collector of cfg on reg, and the job
// ages when reportJobs.
func registerBusMetrics(ctx context.Context, bus *pipeline.Bus, reg prometheus.Registerer, cfg pipeline.BusMetricsConfig, reportJobs bool, log zerolog.Logger) error {
	c, err := pipeline.NewBusCollector(bus, cfg, log)
	if err != nil {
		return err
	}
	if err := reg.Register(c); err != nil {
		return fmt.Errorf("bus metrics: %w", err)
	}
	if !reportJobs {
		return nil
	}
	store, err := jobs.Open(ctx, bus)
	if err != nil {
		return fmt.Errorf("job metrics: %w", err)
	}
	ages, err := jobs.NewAgeCollector(store, nil, log)
	if err != nil {
		return err
	}
	if err := reg.Register(ages); err != nil {
		return fmt.Errorf("job metrics: %w", err)
	}
	return nil
}
