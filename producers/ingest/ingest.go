package ingest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/largeforge/largeforge/dataset"
	"github.com/largeforge/largeforge/dataset/read"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/schemas"
)

// Stage names the dead-letter subjects of ingestion: lf.dlq.ingest.<dataset>.
const Stage = schemas.StageIngest

// Config is one ingestion run's settings.
type Config struct {
	Dataset      string
	Format       string        // auto, alpaca, sharegpt or dpo
	MaxRejects   int64         // < 0: unlimited
	MaxLineBytes int           // longest accepted JSONL line
	ShardBytes   int           // canonical bytes per shard
	Window       int           // shards in flight before waiting for acks
	Workers      int           // decoding goroutines (0: GOMAXPROCS)
	Wait         time.Duration // how long to wait for the sink to confirm the shards (0: don't wait)
}

// DefaultConfig returns the defaults of the CLI.
func DefaultConfig() Config {
	return Config{Format: "auto", MaxRejects: -1, MaxLineBytes: 8 << 20, ShardBytes: dataset.DefaultShardBytes, Window: 32, Wait: 5 * time.Minute}
}

// Validate checks the config.
func (c Config) Validate() error {
	if err := dataset.ValidateName(c.Dataset); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidOption, err)
	}
	if c.Format != "auto" {
		if _, err := schemas.ParseFormat(c.Format); err != nil {
			return fmt.Errorf("%w: --format %q: want auto, alpaca, sharegpt or dpo", ErrInvalidOption, c.Format)
		}
	}
	if c.MaxLineBytes < 1024 {
		return fmt.Errorf("%w: max line bytes %d is below 1024", ErrInvalidOption, c.MaxLineBytes)
	}
	if c.ShardBytes < 1024 || c.ShardBytes > 900<<10 {
		return fmt.Errorf("%w: shard bytes %d: want 1 KiB to 900 KiB (under max_payload)", ErrInvalidOption, c.ShardBytes)
	}
	if c.Window < 1 {
		return fmt.Errorf("%w: publish window %d is below 1", ErrInvalidOption, c.Window)
	}
	return nil
}

// Progress is reported while a run goes on. Duplicates are those the dataset
// sink has found so far (it reports them as it persists shards).
type Progress struct {
	Rows, Accepted, Rejected, Duplicates, Bytes int64
}

// Summary is the outcome of one run.
type Summary struct {
	Dataset        string           `json:"dataset"`
	Source         string           `json:"source"`
	Run            string           `json:"run"`
	Format         schemas.Format   `json:"format"`
	FormatDetected bool             `json:"format_detected"`
	Rows           int64            `json:"rows"`
	Accepted       int64            `json:"accepted"`
	Rejected       int64            `json:"rejected"`
	RejectedByRule map[string]int64 `json:"rejected_by_rule,omitempty"`
	Shards         int64            `json:"shards"`
	Bytes          int64            `json:"bytes"`
	Confirmed      bool             `json:"confirmed"`  // the dataset sink persisted every shard
	Persisted      int64            `json:"persisted"`  // records written to parts by this run (when confirmed)
	Duplicates     int64            `json:"duplicates"` // records the dataset already held (when confirmed)
	AlreadyOnBus   int64            `json:"already_on_bus_shards,omitempty"`
	Seconds        float64          `json:"seconds"`
}

// RowsPerSecond is the run's throughput.
func (s Summary) RowsPerSecond() float64 {
	if s.Seconds == 0 {
		return 0
	}
	return float64(s.Rows) / s.Seconds
}

// Ingester publishes files of training records to the bus.
type Ingester struct {
	bus      *pipeline.Bus
	cfg      Config
	log      zerolog.Logger
	metrics  *dataset.Metrics
	progress func(Progress)
}

// Option configures an Ingester.
type Option func(*Ingester) error

// WithProgress sets a callback called as rows are processed (from the run's goroutine).
func WithProgress(f func(Progress)) Option {
	return func(in *Ingester) error { in.progress = f; return nil }
}

// WithMetrics counts into m.
func WithMetrics(m *dataset.Metrics) Option {
	return func(in *Ingester) error {
		if m == nil {
			return fmt.Errorf("%w: nil metrics", ErrInvalidOption)
		}
		in.metrics = m
		return nil
	}
}

// New returns an Ingester for one dataset.
func New(bus *pipeline.Bus, cfg Config, log zerolog.Logger, opts ...Option) (*Ingester, error) {
	if bus == nil {
		return nil, fmt.Errorf("%w: nil bus", ErrInvalidOption)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	in := &Ingester{bus: bus, cfg: cfg, log: log}
	for _, o := range opts {
		if err := o(in); err != nil {
			return nil, err
		}
	}
	if in.metrics == nil {
		m, _ := dataset.NewMetrics(nil)
		in.metrics = m
	}
	return in, nil
}

// newRunID returns a fresh id for one run.
func newRunID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return time.Now().UTC().Format("20060102T150405") + "-" + hex.EncodeToString(b[:])
}

// Ingest reads source (a path, or "-" for stdin) and publishes its records.
// The error is non-nil when the run failed or rejects exceeded MaxRejects; the
// summary is filled in as far as the run got either way.
func (in *Ingester) Ingest(ctx context.Context, source string, stdin io.Reader) (Summary, error) {
	start := time.Now()
	sum := Summary{Dataset: in.cfg.Dataset, Source: source, Run: newRunID(), RejectedByRule: map[string]int64{}}
	var format schemas.Format
	if in.cfg.Format != "auto" {
		format = schemas.Format(in.cfg.Format)
	}
	rr, err := read.Open(source, stdin, in.cfg.MaxLineBytes, format)
	if err != nil {
		return sum, err
	}
	defer rr.Close()

	ds := in.cfg.Dataset
	shardSubject, err := pipeline.DatasetShardSubject(ds)
	if err != nil {
		return sum, err
	}
	// A dataset holds records of one format: rows of another one are
	// rejects of this run, not shards for the sink to turn away.
	dsFormat, err := in.datasetFormat(ctx)
	if err != nil {
		return sum, err
	}
	shardBytes := read.ShardLimit(in.bus, in.cfg.ShardBytes)
	shards := in.bus.NewPublisher(in.cfg.Window)
	var builder *dataset.ShardBuilder

	// Shards are encoded on their own goroutines and published in order by one
	// publishing goroutine, so that encoding overlaps decoding.
	type encoded struct {
		data   []byte
		msgID  string
		rows   int
		format schemas.Format
		err    error
	}
	queue := make(chan chan encoded, 4)
	pubDone := make(chan error, 1)
	var pubErr atomic.Pointer[error] // the first publishing failure, seen by flush
	go func() {
		var first error
		for f := range queue {
			e := <-f
			if first != nil {
				continue
			}
			if e.err != nil {
				first = e.err
				pubErr.Store(&first)
				continue
			}
			hdr := nats.Header{}
			hdr.Set(dataset.HeaderFormat, string(e.format))
			hdr.Set(dataset.HeaderSource, source)
			hdr.Set(dataset.HeaderRun, sum.Run)
			hdr.Set(dataset.HeaderRows, strconv.Itoa(e.rows))
			if err := shards.Publish(ctx, shardSubject, e.data, e.msgID, hdr); err != nil {
				first = fmt.Errorf("publish shard: %w", err)
				pubErr.Store(&first)
				continue
			}
			in.metrics.Shards.WithLabelValues(ds).Inc()
		}
		pubDone <- first
	}()
	var queueClosed bool
	closeQueue := func() error {
		if queueClosed {
			return nil
		}
		queueClosed = true
		close(queue)
		return <-pubDone
	}
	defer closeQueue()

	flush := func() error {
		if builder == nil || builder.Len() == 0 {
			return nil
		}
		if e := pubErr.Load(); e != nil {
			return *e
		}
		f := builder.Format()
		recs, ids := builder.Take()
		out := make(chan encoded, 1)
		queue <- out
		go func() {
			data, err := dataset.EncodeShard(f, recs, ids)
			out <- encoded{data: data, msgID: dataset.ShardID(ds, ids), rows: len(recs), format: f, err: err}
		}()
		sum.Shards++
		return nil
	}
	var dups atomic.Int64
	if in.progress != nil && in.cfg.Wait > 0 {
		wctx, stop := context.WithCancel(ctx)
		defer stop()
		go in.watchDuplicates(wctx, sum.Run, &dups)
	}
	report := func() {
		if in.progress != nil {
			in.progress(Progress{Rows: sum.Accepted + sum.Rejected, Accepted: sum.Accepted, Rejected: sum.Rejected, Duplicates: dups.Load(), Bytes: rr.BytesRead()})
		}
	}
	var reject func(read.Reject) error
	emit := func(a read.Accepted) error {
		if dsFormat != "" && a.Record.Format != dsFormat {
			return reject(read.Reject{Source: source, Line: a.Line, Rule: schemas.RuleFormat, Original: a.Original,
				Error: fmt.Sprintf("line %d: %s: dataset %s holds %s records; this record is %s (ingest it into a dataset of its own)",
					a.Line, schemas.RuleFormat, ds, dsFormat, a.Record.Format)})
		}
		if builder == nil {
			builder = dataset.NewShardBuilder(a.Record.Format, shardBytes)
		}
		if builder.Full(a.Size) {
			if err := flush(); err != nil {
				return err
			}
		}
		builder.Add(a.Record, a.ID, a.Size)
		sum.Accepted++
		in.metrics.Accepted.WithLabelValues(ds).Inc()
		if sum.Accepted%4096 == 0 {
			report()
		}
		return nil
	}
	reject = func(r read.Reject) error {
		sum.Rejected++
		sum.RejectedByRule[r.Rule]++
		in.metrics.Rejected.WithLabelValues(ds, r.Rule).Inc()
		if sum.Rejected <= 20 {
			in.log.Warn().Dict("context", zerolog.Dict().Str("dataset", ds).Str("source", source).
				Int64("line", r.Line).Str("field", r.Field).Str("rule", r.Rule)).Msg(r.Error)
		}
		rec, msgID := read.RejectRecord(ds, sum.Run, r)
		if err := in.bus.PublishDLQ(ctx, Stage, ds, rec, msgID); err != nil {
			return fmt.Errorf("publish reject: %w", err)
		}
		report()
		return nil
	}

	res, scanErr := scan(ctx, rr, scanOptions{source: source, format: format, maxRecord: shardBytes, workers: in.cfg.Workers}, emit, reject)
	sum.Format, sum.FormatDetected, sum.Rows, sum.Bytes = res.Format, res.Detected, res.Rows, res.Bytes
	in.metrics.Bytes.WithLabelValues(ds).Add(float64(res.Bytes))
	if scanErr == nil {
		scanErr = flush()
	}
	if err := closeQueue(); err != nil && scanErr == nil {
		scanErr = err
	}
	if res.Detected && in.cfg.Format == "auto" {
		in.log.Info().Dict("context", zerolog.Dict().Str("dataset", ds).Str("source", source).Str("format", string(res.Format))).Msg("format detected")
	}
	// Whatever happened, wait for what was published.
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	if err := shards.Flush(fctx); err != nil && scanErr == nil {
		scanErr = fmt.Errorf("publish shards: %w", err)
	}
	stats := shards.Stats()
	sum.AlreadyOnBus = int64(stats.Duplicates)
	report()
	if scanErr == nil && in.cfg.Wait > 0 {
		scanErr = in.waitConfirmed(ctx, &sum, stats.MaxSequence)
	}
	sum.Seconds = time.Since(start).Seconds()
	if scanErr != nil {
		return sum, scanErr
	}
	if valid := sum.Rows - sum.Rejected; valid <= 0 {
		if sum.Rows == 0 {
			return sum, fmt.Errorf("%w: %s holds no records", ErrNothingPersisted, source)
		}
		return sum, fmt.Errorf("%w: all %d rows of %s were rejected (%s); see %s", ErrNothingPersisted, sum.Rows, source, byRule(sum.RejectedByRule), dataset.RejectsFile)
	}
	if in.cfg.MaxRejects >= 0 && sum.Rejected > in.cfg.MaxRejects {
		return sum, fmt.Errorf("%w: %d rejected, --max-rejects is %d", ErrTooManyRejects, sum.Rejected, in.cfg.MaxRejects)
	}
	return sum, nil
}

// byRule writes reject counts as "rule: n, ..." in rule order.
func byRule(counts map[string]int64) string {
	parts := make([]string, 0, len(counts))
	for _, r := range slices.Sorted(maps.Keys(counts)) {
		parts = append(parts, fmt.Sprintf("%s: %d", r, counts[r]))
	}
	return strings.Join(parts, ", ")
}

// datasetFormat returns the format of the dataset's records from its manifest
// in the lf_datasets bucket; "" when the dataset has none yet.
func (in *Ingester) datasetFormat(ctx context.Context) (schemas.Format, error) {
	kv, err := in.bus.KV(ctx, pipeline.BucketDatasets)
	if err != nil {
		return "", err
	}
	e, err := kv.Get(ctx, in.cfg.Dataset)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read the manifest of dataset %s: %w", in.cfg.Dataset, err)
	}
	var m dataset.Manifest
	if err := json.Unmarshal(e.Value(), &m); err != nil {
		return "", fmt.Errorf("read the manifest of dataset %s: %w", in.cfg.Dataset, err)
	}
	return m.Format, nil
}

// watchDuplicates follows the run's duplicate count in the dataset's manifest.
func (in *Ingester) watchDuplicates(ctx context.Context, run string, dups *atomic.Int64) {
	kv, err := in.bus.KV(ctx, pipeline.BucketDatasets)
	if err != nil {
		return
	}
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if src := runEntry(ctx, kv, in.cfg.Dataset, run); src != nil {
			dups.Store(src.Duplicates)
		}
	}
}

// runEntry reads a run's entry from the dataset's manifest in the lf_datasets
// bucket; nil when the manifest or the run is not there yet.
func runEntry(ctx context.Context, kv jetstream.KeyValue, ds, run string) *dataset.Source {
	e, err := kv.Get(ctx, ds)
	if err != nil {
		return nil
	}
	var m dataset.Manifest
	if json.Unmarshal(e.Value(), &m) != nil {
		return nil
	}
	return m.FindRun(run)
}

// SinkDurable is the durable consumer name of the dataset sink, whose ack floor
// tells when a run's shards are persisted.
const SinkDurable = schemas.DatasetSinkDurable

// waitConfirmed waits until the dataset sink has settled every shard this run
// published: the sink's ack floor on LF_DATASETS reaches the highest sequence
// the run's publishes were acked with (for a shard the bus already held, the
// sequence of the copy stored first). That holds after crashes and reruns alike.
// The run's counts are then read from the dataset's manifest.
func (in *Ingester) waitConfirmed(ctx context.Context, sum *Summary, maxSeq uint64) error {
	if sum.Shards == 0 {
		sum.Confirmed = true
		return nil
	}
	kv, err := in.bus.KV(ctx, pipeline.BucketDatasets)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, in.cfg.Wait)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		floor, err := in.bus.AckFloor(ctx, pipeline.StreamDatasets, SinkDurable)
		if err == nil && floor >= maxSeq {
			sum.Confirmed = true
			if src := runEntry(ctx, kv, sum.Dataset, sum.Run); src != nil {
				sum.Persisted, sum.Duplicates = src.Rows, src.Duplicates
				// What the sink neither persisted nor found duplicate it
				// recorded as rejects: a shard of another format than the
				// dataset's (a run of that format set it after this run's
				// check). Shards the bus already held are counted under
				// the run that sent them first.
				if lost := sum.Accepted - sum.Persisted - sum.Duplicates; lost > 0 && sum.AlreadyOnBus == 0 {
					sum.Rejected += lost
					sum.RejectedByRule[schemas.RuleFormat] += lost
				}
			}
			return nil
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("%w: %d shards of run %s are on the bus, but no dataset sink (largeforge up) settled them within %s", ErrNotConfirmed, sum.Shards, sum.Run, in.cfg.Wait)
			}
			return ctx.Err()
		case <-tick.C:
		}
	}
}
