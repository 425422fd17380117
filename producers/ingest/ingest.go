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
//
// Records go through four stages: read and decode (scan, on several
// goroutines), route (a record of another format than the dataset's is a
// reject; the others fill shards), encode (a goroutine per full shard) and
// publish (one goroutine, in order). Then the run waits for the sink.
func (in *Ingester) Ingest(ctx context.Context, source string, stdin io.Reader) (Summary, error) {
	start := time.Now()
	r, err := in.openRun(ctx, source, stdin)
	if err != nil {
		return r.sum, err
	}
	defer r.rr.Close()
	// A shard that fails to publish for good ends the scan at once: the
	// source (stdin, say) may send nothing more for a long time.
	sctx, stopScan := context.WithCancelCause(ctx)
	defer stopScan(nil)
	r.startPublisher(ctx)
	defer r.closeQueue()
	go r.watchPublisher(sctx, stopScan)
	if in.progress != nil && in.cfg.Wait > 0 {
		wctx, stop := context.WithCancel(ctx)
		defer stop()
		go in.watchDuplicates(wctx, r.sum.Run, &r.dups)
	}

	res, err := scan(sctx, r.rr, scanOptions{source: source, format: r.format, maxRecord: r.shardBytes, workers: in.cfg.Workers},
		func(a read.Accepted) error { return r.emit(ctx, a) }, func(rej read.Reject) error { return r.reject(ctx, rej) })
	if err != nil && ctx.Err() == nil && sctx.Err() != nil {
		err = context.Cause(sctx) // the publishing failure, not "context canceled"
	}
	r.sum.Format, r.sum.FormatDetected, r.sum.Rows, r.sum.Bytes = res.Format, res.Detected, res.Rows, res.Bytes
	in.metrics.Bytes.WithLabelValues(r.ds).Add(float64(res.Bytes))
	if res.Detected && in.cfg.Format == "auto" {
		in.log.Info().Dict("context", zerolog.Dict().Str("dataset", r.ds).Str("source", source).Str("format", string(res.Format))).Msg("format detected")
	}
	err = r.finish(ctx, err)
	r.sum.Seconds = time.Since(start).Seconds()
	if err != nil {
		return r.sum, err
	}
	return r.sum, in.verdict(r.sum)
}

// ingestRun is the state of one Ingest.
type ingestRun struct {
	in         *Ingester
	sum        Summary
	source, ds string
	format     schemas.Format // the --format asked for ("": auto)
	dsFormat   schemas.Format // the dataset's format ("": a new dataset)
	rr         read.Source
	subject    string
	shardBytes int
	shards     *pipeline.Publisher
	builder    *dataset.ShardBuilder
	dups       atomic.Int64 // duplicates the sink reported so far (progress only)

	queue       chan chan encodedShard // shards in publishing order
	pubDone     chan error
	pubErr      atomic.Pointer[error] // the first publishing failure, seen by flush
	queueClosed bool
}

// encodedShard is a shard ready to publish.
type encodedShard struct {
	data   []byte
	msgID  string
	rows   int
	format schemas.Format
	err    error
}

// openRun opens the source and reads what the run needs to know of the
// dataset (its subject, its format, the largest shard the bus takes).
func (in *Ingester) openRun(ctx context.Context, source string, stdin io.Reader) (*ingestRun, error) {
	r := &ingestRun{in: in, source: source, ds: in.cfg.Dataset,
		sum: Summary{Dataset: in.cfg.Dataset, Source: source, Run: newRunID(), RejectedByRule: map[string]int64{}}}
	if in.cfg.Format != "auto" {
		r.format = schemas.Format(in.cfg.Format)
	}
	var err error
	if r.rr, err = read.Open(source, stdin, in.cfg.MaxLineBytes, r.format); err != nil {
		return r, err
	}
	if r.subject, err = pipeline.DatasetShardSubject(r.ds); err == nil {
		// A dataset holds records of one format: rows of another one are
		// rejects of this run, not shards for the sink to turn away.
		r.dsFormat, err = in.datasetFormat(ctx)
	}
	if err != nil {
		r.rr.Close()
		return r, err
	}
	r.shardBytes = read.ShardLimit(in.bus, in.cfg.ShardBytes)
	r.shards = in.bus.NewPublisher(in.cfg.Window)
	return r, nil
}

// startPublisher starts the goroutine that publishes the encoded shards in
// order; after the first failure it drops the rest.
func (r *ingestRun) startPublisher(ctx context.Context) {
	r.queue = make(chan chan encodedShard, 4)
	r.pubDone = make(chan error, 1)
	go func() {
		var first error
		for f := range r.queue {
			e := <-f
			if first != nil {
				continue
			}
			if e.err != nil {
				first = e.err
				r.pubErr.Store(&first)
				continue
			}
			hdr := pipeline.Header{}
			hdr.Set(schemas.HeaderFormat, string(e.format))
			hdr.Set(schemas.HeaderSource, r.source)
			hdr.Set(schemas.HeaderRun, r.sum.Run)
			hdr.Set(schemas.HeaderRows, strconv.Itoa(e.rows))
			if err := r.shards.Publish(ctx, r.subject, e.data, e.msgID, hdr); err != nil {
				first = fmt.Errorf("publish shard: %w", err)
				r.pubErr.Store(&first)
				continue
			}
			r.in.metrics.Shards.WithLabelValues(r.ds).Inc()
		}
		r.pubDone <- first
	}()
}

// watchPublisher logs the first shard that fails to publish for good (its
// retries spent) as it happens and ends the scan with it (stop), until ctx
// ends: the publishes are asynchronous, and the next shard, which would
// see the failure, may wait for input that comes late or never.
func (r *ingestRun) watchPublisher(ctx context.Context, stop context.CancelCauseFunc) {
	select {
	case <-r.shards.Failed():
		err := fmt.Errorf("publish shard: %w", r.shards.Err())
		r.in.log.Error().Err(err).Dict("context", zerolog.Dict().Str("dataset", r.ds).Str("source", r.source)).Msg("the run stops")
		stop(err)
	case <-ctx.Done():
	}
}

// closeQueue ends the publishing goroutine and returns its first failure.
func (r *ingestRun) closeQueue() error {
	if r.queueClosed {
		return nil
	}
	r.queueClosed = true
	close(r.queue)
	return <-r.pubDone
}

// flush encodes the shard being built on its own goroutine and queues it.
func (r *ingestRun) flush() error {
	if r.builder == nil || r.builder.Len() == 0 {
		return nil
	}
	if e := r.pubErr.Load(); e != nil {
		return *e
	}
	f := r.builder.Format()
	recs, ids := r.builder.Take()
	out := make(chan encodedShard, 1)
	r.queue <- out
	go func() {
		data, err := dataset.EncodeShard(f, recs, ids)
		out <- encodedShard{data: data, msgID: dataset.ShardID(r.ds, ids), rows: len(recs), format: f, err: err}
	}()
	r.sum.Shards++
	return nil
}

// report calls the progress callback, if any.
func (r *ingestRun) report() {
	if r.in.progress != nil {
		r.in.progress(Progress{Rows: r.sum.Accepted + r.sum.Rejected, Accepted: r.sum.Accepted, Rejected: r.sum.Rejected, Duplicates: r.dups.Load(), Bytes: r.rr.BytesRead()})
	}
}

// emit adds an accepted record to the shard being built (flushing a full
// one), or rejects it when the dataset holds another format.
func (r *ingestRun) emit(ctx context.Context, a read.Accepted) error {
	if r.dsFormat != "" && a.Record.Format != r.dsFormat {
		return r.reject(ctx, read.Reject{Source: r.source, Line: a.Line, Rule: schemas.RuleFormat, Original: a.Original,
			Error: fmt.Sprintf("line %d: %s: dataset %s holds %s records; this record is %s (ingest it into a dataset of its own)",
				a.Line, schemas.RuleFormat, r.ds, r.dsFormat, a.Record.Format)})
	}
	if r.builder == nil {
		r.builder = dataset.NewShardBuilder(a.Record.Format, r.shardBytes)
	}
	if r.builder.Full(a.Size) {
		if err := r.flush(); err != nil {
			return err
		}
	}
	r.builder.Add(a.Record, a.ID, a.Size)
	r.sum.Accepted++
	r.in.metrics.Accepted.WithLabelValues(r.ds).Inc()
	if r.sum.Accepted%4096 == 0 {
		r.report()
	}
	return nil
}

// reject counts a rejected record and dead-letters it with its rule and
// original bytes (the sink writes it to rejects.jsonl).
func (r *ingestRun) reject(ctx context.Context, rej read.Reject) error {
	r.sum.Rejected++
	r.sum.RejectedByRule[rej.Rule]++
	r.in.metrics.Rejected.WithLabelValues(r.ds, rej.Rule).Inc()
	if r.sum.Rejected <= 20 {
		r.in.log.Warn().Dict("context", zerolog.Dict().Str("dataset", r.ds).Str("source", r.source).
			Int64("line", rej.Line).Str("field", rej.Field).Str("rule", rej.Rule)).Msg(rej.Error)
	}
	rec, msgID := read.RejectRecord(r.ds, r.sum.Run, rej)
	if err := r.in.bus.PublishDLQ(ctx, Stage, r.ds, rec, msgID); err != nil {
		return fmt.Errorf("publish reject: %w", err)
	}
	r.report()
	return nil
}

// finish publishes the last shard, waits for every publish (whatever
// happened), then, when the scan succeeded, for the sink to confirm.
func (r *ingestRun) finish(ctx context.Context, scanErr error) error {
	if scanErr == nil {
		scanErr = r.flush()
	}
	if err := r.closeQueue(); err != nil && scanErr == nil {
		scanErr = err
	}
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	if err := r.shards.Flush(fctx); err != nil && scanErr == nil {
		scanErr = fmt.Errorf("publish shards: %w", err)
	}
	stats := r.shards.Stats()
	r.sum.AlreadyOnBus = int64(stats.Duplicates)
	r.report()
	if scanErr == nil && r.in.cfg.Wait > 0 {
		scanErr = r.in.waitConfirmed(ctx, &r.sum, stats.MaxSequence)
	}
	return scanErr
}

// verdict is the error of a run that went through: nothing valid to
// persist, or more rejects than MaxRejects.
func (in *Ingester) verdict(sum Summary) error {
	if valid := sum.Rows - sum.Rejected; valid <= 0 {
		if sum.Rows == 0 {
			return fmt.Errorf("%w: %s holds no records", ErrNothingPersisted, sum.Source)
		}
		return fmt.Errorf("%w: all %d rows of %s were rejected (%s); see %s", ErrNothingPersisted, sum.Rows, sum.Source, byRule(sum.RejectedByRule), dataset.RejectsFile)
	}
	if in.cfg.MaxRejects >= 0 && sum.Rejected > in.cfg.MaxRejects {
		return fmt.Errorf("%w: %d rejected, --max-rejects is %d", ErrTooManyRejects, sum.Rejected, in.cfg.MaxRejects)
	}
	return nil
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
	if errors.Is(err, pipeline.ErrKeyNotFound) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read the manifest of dataset %s: %w", in.cfg.Dataset, err)
	}
	var m dataset.Manifest
	if err := json.Unmarshal(e.Value, &m); err != nil {
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
func runEntry(ctx context.Context, kv *pipeline.KV, ds, run string) *dataset.Source {
	e, err := kv.Get(ctx, ds)
	if err != nil {
		return nil
	}
	var m dataset.Manifest
	if json.Unmarshal(e.Value, &m) != nil {
		return nil
	}
	return m.FindRun(run)
}

// confirmAttempt bounds one look at the dataset sink's progress.
const confirmAttempt = 5 * time.Second

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
	// The sink counts every shard it settles (stored, duplicate or
	// rejected) under the run's entry in the manifest; the shards the bus
	// already held are counted under the run that sent them first.
	wantShards := sum.Shards - sum.AlreadyOnBus
	settled, counted := false, int64(0)
	for {
		// Each look has its own deadline: a request whose reply was lost
		// with a cluster node that died under it would otherwise hold the
		// whole wait (TestChaos found a run unconfirmed after 5m so).
		if !settled {
			actx, acancel := context.WithTimeout(ctx, confirmAttempt)
			floor, err := in.bus.AckFloor(actx, pipeline.StreamDatasets, SinkDurable)
			acancel()
			settled = err == nil && floor >= maxSeq
		}
		if settled {
			// The manifest read may come from a replica that has not caught
			// up with the sink's last write (a cluster node restarted):
			// TestChaos once read a run's entry before its shards were
			// counted, and took its 1,800 records for format rejects. The
			// counts are final once every shard of the run is in them.
			actx, acancel := context.WithTimeout(ctx, confirmAttempt)
			src := runEntry(actx, kv, sum.Dataset, sum.Run)
			acancel()
			if src != nil {
				counted = src.Shards
			}
			if wantShards <= 0 || src != nil && src.Shards >= wantShards {
				sum.Confirmed = true
				if src == nil { // every shard the bus already held: counted under the runs that sent them
					return nil
				}
				sum.Persisted, sum.Duplicates = src.Rows, src.Duplicates
				// What the sink neither persisted nor found duplicate it
				// recorded as rejects: a shard of another format than the
				// dataset's (a run of that format set it after this run's
				// check).
				if lost := sum.Accepted - sum.Persisted - sum.Duplicates; lost > 0 && sum.AlreadyOnBus == 0 {
					sum.Rejected += lost
					sum.RejectedByRule[schemas.RuleFormat] += lost
				}
				return nil
			}
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) && settled {
				return fmt.Errorf("%w: the dataset sink settled the %d shards of run %s, but dataset %s's manifest in lf_datasets counts %d of them after %s", ErrNotConfirmed, wantShards, sum.Run, sum.Dataset, counted, in.cfg.Wait)
			}
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("%w: %d shards of run %s are on the bus, but no dataset sink (largeforge up) settled them within %s", ErrNotConfirmed, sum.Shards, sum.Run, in.cfg.Wait)
			}
			return ctx.Err()
		case <-tick.C:
		}
	}
}
