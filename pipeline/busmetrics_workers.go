package pipeline

import (
	"context"
	"encoding/json"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/largeforge/largeforge/schemas"
)

// MetricWorkers is the live workers per role and model (a heartbeat in
// lf_workers; a train worker's model is ""), and 0 for the workers a
// durable waits for when none runs: what LargeForgeWorkerMissing reads
// when a role's workers are all gone (a Deployment scaled to 0), whose
// own scrapes vanish with them.
const MetricWorkers = "largeforge_workers"

// WorkerOf names the role and model of the heartbeating workers that fetch
// from durable of stream; ok is false for a durable no such worker serves.
type WorkerOf func(stream, durable string) (role, model string, ok bool)

// workerKey is a MetricWorkers series.
type workerKey struct{ role, model string }

// collectListed reports every durable of the streams of ConsumersOf and
// returns the workers they wait for (WorkerOf).
func (c *BusCollector) collectListed(ctx context.Context, ch chan<- prometheus.Metric, skip func(string, error)) map[workerKey]bool {
	waiting := map[workerKey]bool{}
	for _, name := range c.cfg.ConsumersOf {
		s, err := c.bus.js.Stream(ctx, name)
		if err != nil {
			skip(name, err)
			continue
		}
		list := s.ListConsumers(ctx)
		for info := range list.Info() {
			if info.Config.Durable == "" {
				continue // an ordered or ephemeral reader, no worker's queue
			}
			ch <- prometheus.MustNewConstMetric(c.lag, prometheus.GaugeValue, float64(info.NumPending), name, info.Name)
			ch <- prometheus.MustNewConstMetric(c.ackPending, prometheus.GaugeValue, float64(info.NumAckPending), name, info.Name)
			if c.cfg.WorkerOf == nil {
				continue
			}
			if role, model, ok := c.cfg.WorkerOf(name, info.Name); ok {
				waiting[workerKey{role, model}] = true
			}
		}
		if err := list.Err(); err != nil {
			skip(name+" consumers", err)
		}
	}
	return waiting
}

// collectWorkers reports MetricWorkers: the live heartbeats per role and
// model, and 0 for each of waiting that none is.
func (c *BusCollector) collectWorkers(ctx context.Context, ch chan<- prometheus.Metric, waiting map[workerKey]bool, skip func(string, error)) {
	kv, err := c.bus.KV(ctx, BucketWorkers)
	if err != nil {
		skip(BucketWorkers, err)
		return
	}
	keys, err := kv.Keys(ctx)
	if err != nil {
		skip(BucketWorkers, err)
		return
	}
	counts := map[workerKey]int{}
	for k := range waiting {
		counts[k] = 0
	}
	for _, key := range keys {
		e, err := kv.Get(ctx, key)
		if err != nil {
			continue // expired while we read
		}
		var hb schemas.Heartbeat
		if err := json.Unmarshal(e.Value, &hb); err != nil {
			skip(BucketWorkers+"/"+key, err)
			continue
		}
		if len(hb.Models) == 0 {
			counts[workerKey{hb.Role, ""}]++
		}
		for _, m := range hb.Models {
			counts[workerKey{hb.Role, m}]++
		}
	}
	for k, n := range counts {
		ch <- prometheus.MustNewConstMetric(c.workers, prometheus.GaugeValue, float64(n), k.role, k.model)
	}
}
