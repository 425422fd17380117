package resultsink

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/logging"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/schemas"
	"github.com/largeforge/largeforge/storage"
)

// Durable consumer names.
const (
	DurableResults = "results-sink"
	DurableDLQ     = "results-dlq"
)

// DefaultSweepEvery is how often the sink looks for jobs to settle that no
// message wakes (see Sink.Sweep).
const DefaultSweepEvery = 2 * time.Second

// FullSweepEvery is how many sweeps pass between two that read every job
// (the others read only the jobs the sink has open).
const FullSweepEvery = 15

// ResultsGather is how long a batch of results stays open after its first
// result (pipeline.ConsumerConfig.Gather): each batch is a part to write,
// and at finalization to read again, so a job's results come in parts of
// up to 256 rows rather than of the few that a worker's last step made.
// The next batch is fetched while one is stored (pipeline.ConsumerConfig.
// Prefetch): a sink's batches are short, and storing one waits on the
// bus more than it computes (BenchmarkAssembly/as_it_goes: 14,560 and
// 14,823 rows/s with it, 11,226 and 11,371 without, alternated).
const ResultsGather = 100 * time.Millisecond

// Options tune the sink workers; the zero value means the defaults.
type Options struct {
	SweepEvery time.Duration // default DefaultSweepEvery
	AckWait    time.Duration // default: the pipeline's
	MaxWait    time.Duration // default 300ms
	// Gather is how long a batch of results stays open for more after its
	// first (default ResultsGather): longer makes larger parts of busy
	// jobs; a job's last results never wait it out.
	Gather time.Duration
	// FinalizeLease is a finalizer's claim on a job (default DefaultFinalizeLease).
	FinalizeLease time.Duration
	// CatchUpEvery is how often at most a job's assembly reads the parts
	// other sinks stored (default DefaultCatchUpEvery).
	CatchUpEvery time.Duration
	// Mirror, when set, also receives each job's final files (WithMirror).
	Mirror *storage.Local
	// ID names the sink as a finalizer (default: host name and a random suffix).
	ID string
}

// Workers are the running results sink, its dead-letter reader and its
// sweep.
type Workers struct {
	*pipeline.Group
	Sink *Sink
}

// Start is StartStore on a local store whose jobs are in jobsDir
// (<data-dir>/jobs).
func Start(ctx context.Context, bus *pipeline.Bus, jobsDir string, opts Options, log zerolog.Logger) (*Workers, error) {
	files, err := storage.NewLocal(storage.Dirs{Jobs: jobsDir})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidOption, err)
	}
	return StartStore(ctx, bus, files, opts, log)
}

// StartStore starts the results sink on bus, writing the results into files
// (the artifacts object store, or a directory in tests): the consumer of
// lf.res.>, the reader of the infer dead letters (lf.dlq.infer.>, turned
// into error rows), and the finalizer, which settles the jobs a batch
// completes and sweeps for the others. They run until ctx ends, then drain;
// Wait returns then. Any number of sinks may run on one bus.
func StartStore(ctx context.Context, bus *pipeline.Bus, files storage.Store, opts Options, log zerolog.Logger) (*Workers, error) {
	if bus == nil {
		return nil, fmt.Errorf("%w: nil bus", ErrInvalidOption)
	}
	if opts.SweepEvery < 0 || opts.AckWait < 0 || opts.MaxWait < 0 || opts.FinalizeLease < 0 || opts.CatchUpEvery < 0 || opts.Gather < 0 {
		return nil, fmt.Errorf("%w: negative duration", ErrInvalidOption)
	}
	if opts.SweepEvery == 0 {
		opts.SweepEvery = DefaultSweepEvery
	}
	if opts.MaxWait == 0 {
		opts.MaxWait = 300 * time.Millisecond
	}
	if opts.Gather == 0 {
		opts.Gather = ResultsGather
	}
	store, err := jobs.Open(ctx, bus)
	if err != nil {
		return nil, err
	}
	var sopts []Option
	if opts.FinalizeLease > 0 {
		sopts = append(sopts, WithFinalizeLease(opts.FinalizeLease))
	}
	if opts.CatchUpEvery > 0 {
		sopts = append(sopts, WithCatchUpEvery(opts.CatchUpEvery))
	}
	if opts.Mirror != nil {
		sopts = append(sopts, WithMirror(opts.Mirror))
	}
	if opts.ID != "" {
		sopts = append(sopts, WithID(opts.ID))
	}
	sink, err := New(files, store, log, sopts...)
	if err != nil {
		return nil, err
	}
	dlq := &dlqHandler{bus: bus, log: logging.Named(log, "largeforge.results-dlq")}
	specs := []struct {
		cfg pipeline.ConsumerConfig
		h   pipeline.Handler
	}{
		{pipeline.ConsumerConfig{Stream: pipeline.StreamResults, Durable: DurableResults, FilterSubjects: []string{"lf.res.>"},
			Stage: "results", Batch: 256, Gather: opts.Gather, GatherMore: sink.ResultsLacking, MaxWait: opts.MaxWait, AckWait: opts.AckWait, Prefetch: true}, sink},
		{pipeline.ConsumerConfig{Stream: pipeline.StreamDLQ, Durable: DurableDLQ, FilterSubjects: []string{"lf.dlq.infer.>"},
			Stage: "results-dlq", Batch: 64, MaxWait: opts.MaxWait, AckWait: opts.AckWait}, dlq},
	}
	consumers := make([]*pipeline.Consumer, len(specs))
	for i, sp := range specs {
		if consumers[i], err = pipeline.NewConsumer(ctx, bus, sp.cfg, sp.h, logging.Named(log, "largeforge.consumer."+sp.cfg.Durable)); err != nil {
			return nil, err
		}
	}
	w := &Workers{Group: pipeline.NewGroup(ctx), Sink: sink}
	for _, c := range consumers {
		w.Consume(c, 1)
	}
	w.Go(func(ctx context.Context) error {
		t := time.NewTicker(opts.SweepEvery)
		defer t.Stop()
		for i := 0; ; i++ {
			// Every job at start and every FullSweepEvery ticks; the open ones in between.
			if err := sink.Sweep(ctx, i%FullSweepEvery == 0); err != nil && ctx.Err() == nil {
				sink.log.Warn().Err(err).Msg("sweep")
			}
			for waiting := true; waiting; {
				select {
				case <-ctx.Done():
					// Give back the jobs this sink assembles.
					rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
					defer cancel()
					sink.release(rctx)
					return nil
				case <-t.C:
					waiting = false
				case job := <-sink.Ready():
					if err := sink.Settle(ctx, job); err != nil && ctx.Err() == nil {
						sink.log.Warn().Err(err).Str("job", job).Msg("finalize")
					}
				}
			}
		}
	})
	return w, nil
}

// dlqHandler turns a dead-lettered request into its error row on lf.res.<job>.
type dlqHandler struct {
	bus *pipeline.Bus
	log zerolog.Logger
}

func (d *dlqHandler) Handle(ctx context.Context, msgs []pipeline.Msg) []error {
	errs := make([]error, len(msgs))
	for i, m := range msgs {
		rec, err := pipeline.DecodeDLQRecord(m.Data)
		if err != nil {
			d.log.Warn().Err(err).Msg("unreadable dead letter skipped")
			continue
		}
		req, _ := schemas.DecodeRequest(rec.Data)
		if jobs.ValidID(req.Job) != nil || schemas.ValidCustomID(req.CustomID) != nil {
			d.log.Warn().Str("reason", rec.Reason).Str("subject", rec.Subject).Msg("dead letter without a job request skipped")
			continue
		}
		msg := rec.Reason
		if rec.Error != "" && rec.Error != rec.Reason {
			msg = rec.Error
		}
		res := schemas.ErrorResult(req.Job, req.CustomID, req.Model, req.Kind, req.Line, schemas.CodeDeadLetter,
			fmt.Sprintf("%s (after %d deliveries)", msg, rec.Deliveries))
		data, _ := json.Marshal(res)
		subj, err := pipeline.ResultSubject(req.Job)
		if err != nil {
			continue
		}
		if _, err := d.bus.Publish(ctx, subj, data, schemas.MsgID(req.Job, req.CustomID), nil); err != nil {
			errs[i] = err
		}
	}
	return errs
}
