package pipeline

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Bus metric names: what JetStream holds, read at each scrape (beside the
// data dictionary's §5 names, which the components export themselves).
const (
	// MetricConsumerLag is the messages of a durable's stream (under its
	// filter) not yet delivered to it: the work waiting for its workers.
	MetricConsumerLag = "largeforge_consumer_lag_messages"
	// MetricConsumerAckPending is the messages delivered to a durable and
	// not yet acknowledged: the work in progress.
	MetricConsumerAckPending = "largeforge_consumer_ack_pending_messages"
	// MetricDeadLetters is the dead letters LF_DLQ holds, per stage.
	MetricDeadLetters = "largeforge_dead_letters"
	// MetricStreamBytes and MetricStreamMessages are what a stream holds;
	// MetricStreamMaxBytes and MetricStreamMaxAge its size and age limits
	// (0: none), for every stream reported.
	MetricStreamBytes    = "largeforge_stream_bytes"
	MetricStreamMessages = "largeforge_stream_messages"
	MetricStreamMaxBytes = "largeforge_stream_max_bytes"
	MetricStreamMaxAge   = "largeforge_stream_max_age_seconds"
	// MetricObjectStoreBytes is what an object store holds;
	// MetricObjectStoreMaxBytes its size limit (only when it has one).
	MetricObjectStoreBytes    = "largeforge_object_store_bytes"
	MetricObjectStoreMaxBytes = "largeforge_object_store_max_bytes"
)

// DeadLetterStages are the stages that dead-letter (lf.dlq.<stage>.<token>):
// MetricDeadLetters reports each, 0 when LF_DLQ holds none of it.
var DeadLetterStages = []string{"ingest", "sink", "rejects", "infer", "train"}

// ConsumerRef names a durable consumer of a stream.
type ConsumerRef struct{ Stream, Durable string }

// BusMetricsConfig says what a BusCollector reports: each process reports
// what its role may read (deploy/nats-roles.conf), admin everything.
type BusMetricsConfig struct {
	Consumers    []ConsumerRef // lag and ack pending
	Streams      []string      // bytes, messages, max bytes
	ObjectStores []string      // bytes, max bytes
	DeadLetters  bool          // LF_DLQ per stage
	// ConsumersOf are streams each of whose durables is reported (lag and
	// ack pending), listed at every scrape: the lag of a model whose workers
	// are all gone (the only ones that name its durable) included. A
	// Consumers entry on one of them is reported once.
	ConsumersOf []string
	// Workers reports MetricWorkers from lf_workers's heartbeats; WorkerOf
	// (may be nil) names the workers a durable of ConsumersOf waits for,
	// reported 0 when no heartbeat is theirs.
	Workers  bool
	WorkerOf WorkerOf
	// Timeout bounds the JetStream calls of one scrape (default 5s).
	Timeout time.Duration
}

// AllBusMetrics is what an admin process reports: every durable of
// consumers, every stream of topo and its object stores, dead letters.
func AllBusMetrics(topo Topology, consumers []ConsumerRef) BusMetricsConfig {
	c := BusMetricsConfig{Consumers: consumers, DeadLetters: true}
	for _, s := range topo.Streams {
		c.Streams = append(c.Streams, s.Name)
	}
	for _, o := range topo.ObjectStores {
		c.ObjectStores = append(c.ObjectStores, o.Bucket)
	}
	return c
}

// BusCollector is a prometheus.Collector reading JetStream at each scrape.
// A value it cannot read (a stream or durable missing, a lookup denied) is
// left out of that scrape and logged at debug; the others are reported.
type BusCollector struct {
	bus *Bus
	cfg BusMetricsConfig
	log zerolog.Logger

	lag, ackPending, dead, sBytes, sMsgs, sMax, sMaxAge, oBytes, oMax, workers *prometheus.Desc
}

// NewBusCollector returns the collector of cfg on bus. Register it on the
// process's registry.
func NewBusCollector(bus *Bus, cfg BusMetricsConfig, log zerolog.Logger) (*BusCollector, error) {
	if bus == nil {
		return nil, fmt.Errorf("%w: bus metrics: no bus", ErrInvalidOption)
	}
	for _, c := range cfg.Consumers {
		if c.Stream == "" || c.Durable == "" {
			return nil, fmt.Errorf("%w: bus metrics: consumer %+v needs a stream and a durable", ErrInvalidOption, c)
		}
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("%w: bus metrics: timeout %s", ErrInvalidOption, cfg.Timeout)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	return &BusCollector{bus: bus, cfg: cfg, log: log,
		lag:        prometheus.NewDesc(MetricConsumerLag, "Messages of a durable's stream not yet delivered to it (work waiting).", []string{"stream", "durable"}, nil),
		ackPending: prometheus.NewDesc(MetricConsumerAckPending, "Messages delivered to a durable and not yet acknowledged (work in progress).", []string{"stream", "durable"}, nil),
		dead:       prometheus.NewDesc(MetricDeadLetters, "Dead letters held in LF_DLQ, per stage.", []string{"stage"}, nil),
		sBytes:     prometheus.NewDesc(MetricStreamBytes, "Bytes a stream holds.", []string{"stream"}, nil),
		sMsgs:      prometheus.NewDesc(MetricStreamMessages, "Messages a stream holds.", []string{"stream"}, nil),
		sMax:       prometheus.NewDesc(MetricStreamMaxBytes, "A stream's size limit (max_bytes; 0: none).", []string{"stream"}, nil),
		sMaxAge:    prometheus.NewDesc(MetricStreamMaxAge, "A stream's age limit in seconds (max_age; 0: none).", []string{"stream"}, nil),
		oBytes:     prometheus.NewDesc(MetricObjectStoreBytes, "Bytes an object store holds.", []string{"bucket"}, nil),
		oMax:       prometheus.NewDesc(MetricObjectStoreMaxBytes, "An object store's size limit, when it has one.", []string{"bucket"}, nil),
		workers:    prometheus.NewDesc(MetricWorkers, "Live workers (a heartbeat in lf_workers) per role and model; 0 for the workers a durable waits for and none serves.", []string{"role", "model"}, nil),
	}, nil
}

// Describe implements prometheus.Collector.
func (c *BusCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.lag, c.ackPending, c.dead, c.sBytes, c.sMsgs, c.sMax, c.sMaxAge, c.oBytes, c.oMax, c.workers} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *BusCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.Timeout)
	defer cancel()
	js := c.bus.js
	skip := func(what string, err error) {
		c.log.Debug().Err(err).Str("metric", what).Msg("bus metric left out of this scrape")
	}
	for _, ref := range c.cfg.Consumers {
		if slices.Contains(c.cfg.ConsumersOf, ref.Stream) {
			continue // listed below
		}
		cons, err := js.Consumer(ctx, ref.Stream, ref.Durable)
		if err != nil {
			skip(ref.Stream+"/"+ref.Durable, err)
			continue
		}
		info := cons.CachedInfo()
		ch <- prometheus.MustNewConstMetric(c.lag, prometheus.GaugeValue, float64(info.NumPending), ref.Stream, ref.Durable)
		ch <- prometheus.MustNewConstMetric(c.ackPending, prometheus.GaugeValue, float64(info.NumAckPending), ref.Stream, ref.Durable)
	}
	for _, name := range c.cfg.Streams {
		s, err := js.Stream(ctx, name)
		if err != nil {
			skip(name, err)
			continue
		}
		info := s.CachedInfo()
		ch <- prometheus.MustNewConstMetric(c.sBytes, prometheus.GaugeValue, float64(info.State.Bytes), name)
		ch <- prometheus.MustNewConstMetric(c.sMsgs, prometheus.GaugeValue, float64(info.State.Msgs), name)
		ch <- prometheus.MustNewConstMetric(c.sMax, prometheus.GaugeValue, float64(max(info.Config.MaxBytes, 0)), name)
		ch <- prometheus.MustNewConstMetric(c.sMaxAge, prometheus.GaugeValue, info.Config.MaxAge.Seconds(), name)
	}
	waiting := c.collectListed(ctx, ch, skip)
	if c.cfg.Workers {
		c.collectWorkers(ctx, ch, waiting, skip)
	}
	for _, bucket := range c.cfg.ObjectStores {
		s, err := js.Stream(ctx, "OBJ_"+bucket)
		if err != nil {
			skip(bucket, err)
			continue
		}
		info := s.CachedInfo()
		ch <- prometheus.MustNewConstMetric(c.oBytes, prometheus.GaugeValue, float64(info.State.Bytes), bucket)
		if info.Config.MaxBytes > 0 {
			ch <- prometheus.MustNewConstMetric(c.oMax, prometheus.GaugeValue, float64(info.Config.MaxBytes), bucket)
		}
	}
	if c.cfg.DeadLetters {
		counts, err := c.deadLetters(ctx, js)
		if err != nil {
			skip(StreamDLQ, err)
			return
		}
		for stage, n := range counts {
			ch <- prometheus.MustNewConstMetric(c.dead, prometheus.GaugeValue, float64(n), stage)
		}
	}
}

// deadLetters counts LF_DLQ's messages per stage (lf.dlq.<stage>.<token>),
// every one of DeadLetterStages included.
func (c *BusCollector) deadLetters(ctx context.Context, js jetstream.JetStream) (map[string]uint64, error) {
	s, err := js.Stream(ctx, StreamDLQ)
	if err != nil {
		return nil, err
	}
	f, err := DLQFilter(AnyToken, AnyToken)
	if err != nil {
		return nil, err
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(f))
	if err != nil {
		return nil, err
	}
	counts := map[string]uint64{}
	for _, st := range DeadLetterStages {
		counts[st] = 0
	}
	for subj, n := range info.State.Subjects {
		parts := strings.Split(subj, ".")
		if len(parts) != 4 {
			continue
		}
		counts[parts[2]] += n
	}
	return counts, nil
}

// BusMetricNames are the names a BusCollector exports (for the checks of
// deploy/prometheus and deploy/grafana).
func BusMetricNames() []string {
	return slices.Clone([]string{MetricConsumerLag, MetricConsumerAckPending, MetricDeadLetters,
		MetricStreamBytes, MetricStreamMessages, MetricStreamMaxBytes, MetricStreamMaxAge, MetricObjectStoreBytes, MetricObjectStoreMaxBytes, MetricWorkers})
}
