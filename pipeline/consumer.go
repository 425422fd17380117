package pipeline

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Handler processes a batch of messages and returns one outcome per message,
// in order:
//   - nil: the handler has durably published or written its output; the
//     message is acked.
//   - an error wrapping ErrInvalid (see Invalid): the message can never be
//     processed; a DLQRecord is written and the message is terminated.
//   - any other error: transient; the message is nakked with a delay and
//     redelivered, until MaxDeliver deliveries have failed, then it goes to the
//     DLQ as well.
//   - Deferred(wait): the output is on its way but not yet durable (an
//     asynchronous publish awaiting its ack); the message is settled by what
//     wait returns, as above, while the Consumer goes on with the next batch.
//
// Handle cannot ack, nak or term the messages: a Msg carries no way to. A
// panic in Handle counts as a transient failure of every message of the
// batch.
type Handler interface {
	Handle(ctx context.Context, msgs []Msg) []error
}

// HandlerFunc handles one message; see Handler for what its error means.
type HandlerFunc func(ctx context.Context, msg Msg) error

// Deferred is the outcome of a message whose output was sent but is not yet
// durable: the Consumer calls wait (from another goroutine, after Handle has
// returned) and settles the message by its result as if Handle had returned
// it; meanwhile it handles the next batches. wait must return once the output
// is durable or has failed, or when its ctx ends (DrainTimeout after Run's
// ctx). The message counts against MaxAckPending and is kept in progress until
// it is settled, so outputs awaiting their acks are bounded by MaxAckPending.
// A nil wait is a transient failure.
func Deferred(wait func(ctx context.Context) error) error { return deferred{wait} }

type deferred struct{ wait func(context.Context) error }

func (deferred) Error() string { return "pipeline: outcome deferred (see Deferred)" }

// errNoWait is the outcome of a Deferred without a wait function.
var errNoWait = errors.New("deferred outcome without a wait")

// PerMessage makes a Handler that calls f for each message of a batch in turn.
func PerMessage(f HandlerFunc) Handler { return perMessage(f) }

type perMessage HandlerFunc

func (f perMessage) Handle(ctx context.Context, msgs []Msg) []error {
	errs := make([]error, len(msgs))
	for i, m := range msgs {
		errs[i] = f(ctx, m)
	}
	return errs
}

// Consumer defaults.
const (
	DefaultBatch      = 64
	DefaultMaxWait    = time.Second
	DefaultAckWait    = 30 * time.Second
	DefaultMaxDeliver = 5
	DefaultNakDelay   = time.Second
	DefaultLinger     = 10 * time.Millisecond
)

// ConsumerConfig configures a durable pull consumer and its consume loop.
type ConsumerConfig struct {
	Stream         string   // required
	Durable        string   // required; no spaces, '.', '*' or '>'
	FilterSubjects []string // empty: the whole stream
	Stage          string   // required; names the DLQ subject lf.dlq.<stage>.<token>

	Batch           int           // fetch batch size (default 64)
	MaxWait         time.Duration // how long one fetch waits for a first message (default 1s); Run returns within MaxWait of its ctx ending
	Linger          time.Duration // how long to wait for the rest of a batch the stream says is pending (default 10ms)
	MaxAckPending   int           // default 4*Batch; never unlimited, at least Batch
	AckWait         time.Duration // default 30s
	MaxDeliver      int           // default 5: the delivery that fails transiently for the 5th time goes to the DLQ
	NakDelay        time.Duration // redelivery delay after a transient failure (default 1s)
	InProgressEvery time.Duration // default AckWait/3; must be below AckWait
	// DrainTimeout bounds how long the in-flight batch and the Deferred
	// outcomes not yet settled may still run after Run's ctx ends (default
	// AckWait); then the handler's ctx and the waits' are cancelled.
	DrainTimeout time.Duration
	// Prefetch fetches the next batch while the current one is handled, so a
	// fast handler never waits for a fetch's round trip. The prefetched batch
	// is held, kept in progress, until the handler is free: no other loop on
	// the durable can take it meanwhile. Leave it off where a batch takes long
	// and work must go to whichever worker is free (inference, training); when
	// Run ends, a batch still held is nakked without delay (Stats.Released).
	Prefetch bool
	// Gather, when above 0, keeps each batch open that long after its
	// first message, taking up to Batch messages whether or not the stream
	// had them when it began (instead of Linger for those pending then):
	// fewer, larger batches for a handler whose cost is mostly per batch
	// (the results sink writes a part per batch), at up to Gather of
	// latency each.
	Gather time.Duration
	// GatherMore, when set with Gather, is asked how many more messages a
	// gathered batch (the subjects of its messages) is still to take: 0
	// closes it at once, n > 0 waits for n more at most (within Gather), a
	// negative number for as many as come within Gather. The results sink
	// knows how many results its jobs lack, so a job's last batch does not
	// wait out Gather.
	GatherMore func(subjects []string) int
	// Metrics, when not nil, receives the loop's counts (see NewMetrics).
	Metrics *Metrics
	// DLQToken maps a message subject to the last DLQ subject token. Default:
	// the 3rd token (lf.data.<ds>.raw → ds, lf.req.<job>.<model> → job);
	// "unknown" when that is missing or not a valid token.
	DLQToken func(subject string) string
	// OnDeadLetter, when not nil, is called after a message was
	// dead-lettered (its DLQ record written, the message terminated), with
	// that record, whatever the reason: the place for the message's owner to
	// record the failure where its users look (a training job's record).
	OnDeadLetter func(ctx context.Context, rec DLQRecord)
}

// Validate checks cfg; zero values mean the defaults. Errors wrap ErrInvalidOption.
func (c ConsumerConfig) Validate() error {
	if c.Stream == "" {
		return fmt.Errorf("%w: consumer stream is required", ErrInvalidOption)
	}
	if err := ValidToken(c.Stream); err != nil {
		return fmt.Errorf("consumer stream: %w", err)
	}
	if c.Durable == "" {
		return fmt.Errorf("%w: consumer durable name is required", ErrInvalidOption)
	}
	if err := ValidToken(c.Durable); err != nil {
		return fmt.Errorf("consumer durable name: %w", err)
	}
	if err := ValidToken(c.Stage); err != nil {
		return fmt.Errorf("consumer stage: %w", err)
	}
	for _, f := range c.FilterSubjects {
		if strings.TrimSpace(f) == "" || strings.ContainsAny(f, " \t\r\n") {
			return fmt.Errorf("%w: filter subject %q", ErrInvalidOption, f)
		}
	}
	for name, v := range map[string]int{"batch": c.Batch, "max ack pending": c.MaxAckPending, "max deliver": c.MaxDeliver} {
		if v < 0 {
			return fmt.Errorf("%w: %s %d is negative (0 means the default)", ErrInvalidOption, name, v)
		}
	}
	for name, v := range map[string]time.Duration{"max wait": c.MaxWait, "linger": c.Linger, "gather": c.Gather, "ack wait": c.AckWait, "nak delay": c.NakDelay, "in progress every": c.InProgressEvery, "drain timeout": c.DrainTimeout} {
		if v < 0 {
			return fmt.Errorf("%w: %s %v is negative (0 means the default)", ErrInvalidOption, name, v)
		}
	}
	d := c.withDefaults()
	if d.MaxAckPending < d.Batch {
		return fmt.Errorf("%w: max ack pending %d is below the batch size %d", ErrInvalidOption, d.MaxAckPending, d.Batch)
	}
	if d.Gather > 0 && d.Gather < time.Millisecond {
		return fmt.Errorf("%w: gather %v is below 1ms", ErrInvalidOption, d.Gather)
	}
	if d.InProgressEvery >= d.AckWait {
		return fmt.Errorf("%w: in progress every %v must be below ack wait %v", ErrInvalidOption, d.InProgressEvery, d.AckWait)
	}
	if d.AckWait < time.Millisecond || d.MaxWait < time.Millisecond || d.Linger < time.Millisecond || d.InProgressEvery < time.Millisecond {
		return fmt.Errorf("%w: ack wait, max wait, linger and in progress every must be at least 1ms", ErrInvalidOption)
	}
	return nil
}

func (c ConsumerConfig) withDefaults() ConsumerConfig {
	if c.Batch == 0 {
		c.Batch = DefaultBatch
	}
	if c.MaxWait == 0 {
		c.MaxWait = DefaultMaxWait
	}
	if c.Linger == 0 {
		c.Linger = DefaultLinger
	}
	if c.MaxAckPending == 0 {
		c.MaxAckPending = 4 * c.Batch
	}
	if c.AckWait == 0 {
		c.AckWait = DefaultAckWait
	}
	if c.MaxDeliver == 0 {
		c.MaxDeliver = DefaultMaxDeliver
	}
	if c.NakDelay == 0 {
		c.NakDelay = DefaultNakDelay
	}
	if c.InProgressEvery == 0 {
		c.InProgressEvery = c.AckWait / 3
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = c.AckWait
	}
	if c.DLQToken == nil {
		c.DLQToken = ThirdToken
	}
	return c
}

// ThirdToken returns the 3rd token of subject (lf.req.<job>.<model> → job), or
// "unknown" when there is none or it is not a valid token.
func ThirdToken(subject string) string {
	parts := strings.SplitN(subject, ".", 4)
	if len(parts) < 3 || ValidToken(parts[2]) != nil {
		return "unknown"
	}
	return parts[2]
}

func (c ConsumerConfig) jsConfig() jetstream.ConsumerConfig {
	jc := jetstream.ConsumerConfig{
		Durable:       c.Durable,
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckWait:       c.AckWait,
		// One delivery more than ours: a message whose last attempt never
		// finished (crash) comes back once more and goes straight to the DLQ.
		MaxDeliver:    c.MaxDeliver + 1,
		MaxAckPending: c.MaxAckPending,
	}
	switch len(c.FilterSubjects) {
	case 0:
	case 1:
		jc.FilterSubject = c.FilterSubjects[0]
	default:
		jc.FilterSubjects = c.FilterSubjects
	}
	return jc
}

// ConsumerStats counts a Consumer's outcomes since NewConsumer.
type ConsumerStats struct {
	Fetched    uint64 // messages received
	Batches    uint64 // Handle calls
	Acked      uint64
	Nakked     uint64 // transient failures retried
	DeadLetter uint64 // DLQ records written and messages terminated
	DLQFailed  uint64 // DLQ publishes that failed (the message was nakked instead)
	Deferred   uint64 // Deferred outcomes (each then counted by its settlement)
	Released   uint64 // prefetched messages given back unhandled when Run ended (nakked without delay)
}

// Consumer runs the consume loop of one durable pull consumer.
type Consumer struct {
	bus  *Bus
	cfg  ConsumerConfig
	h    Handler
	log  zerolog.Logger
	cons atomic.Pointer[jetstream.Consumer]

	fetched, batches, acked, nakked, dead, dlqFailed, deferred, released atomic.Uint64

	m consumerMetrics
}

// consumerMetrics are the Metrics children of one consumer (no-ops without Metrics).
type consumerMetrics struct {
	ack, nak, dead, dlqFailed, fetchErrors prometheus.Counter
	batch, batchSize                       prometheus.Observer
}

func newConsumerMetrics(m *Metrics, stream, durable string) consumerMetrics {
	if m == nil {
		nop := prometheus.NewCounter(prometheus.CounterOpts{Name: "unused"})
		obs := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "unused"})
		return consumerMetrics{nop, nop, nop, nop, nop, obs, obs}
	}
	return consumerMetrics{
		ack:         m.Messages.WithLabelValues(stream, durable, OutcomeAck),
		nak:         m.Messages.WithLabelValues(stream, durable, OutcomeNak),
		dead:        m.Messages.WithLabelValues(stream, durable, OutcomeDeadLetter),
		dlqFailed:   m.Messages.WithLabelValues(stream, durable, OutcomeDLQFailed),
		fetchErrors: m.FetchErrors.WithLabelValues(stream, durable),
		batch:       m.Batch.WithLabelValues(stream, durable),
		batchSize:   m.BatchSize.WithLabelValues(stream, durable),
	}
}

// NewConsumer validates cfg and creates or updates the durable pull consumer.
func NewConsumer(ctx context.Context, bus *Bus, cfg ConsumerConfig, h Handler, log zerolog.Logger) (*Consumer, error) {
	if bus == nil || h == nil {
		return nil, fmt.Errorf("%w: consumer needs a bus and a handler", ErrInvalidOption)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Consumer{
		bus: bus,
		cfg: cfg.withDefaults(),
		h:   h,
		log: log.With().Str("logger", "pipeline.consumer").Str("stream", cfg.Stream).Str("durable", cfg.Durable).Str("stage", cfg.Stage).Logger(),
	}
	c.m = newConsumerMetrics(cfg.Metrics, cfg.Stream, cfg.Durable)
	if err := c.ensure(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Consumer) ensure(ctx context.Context) error {
	cons, err := c.bus.js.CreateOrUpdateConsumer(ctx, c.cfg.Stream, c.cfg.jsConfig())
	if err != nil {
		return fmt.Errorf("consumer %s on %s: %w", c.cfg.Durable, c.cfg.Stream, err)
	}
	c.cons.Store(&cons)
	return nil
}

// Config returns the configuration with its defaults filled in.
func (c *Consumer) Config() ConsumerConfig { return c.cfg }

// Stats returns the counts so far.
func (c *Consumer) Stats() ConsumerStats {
	return ConsumerStats{
		Fetched: c.fetched.Load(), Batches: c.batches.Load(), Acked: c.acked.Load(),
		Nakked: c.nakked.Load(), DeadLetter: c.dead.Load(), DLQFailed: c.dlqFailed.Load(),
		Deferred: c.deferred.Load(), Released: c.released.Load(),
	}
}

// Run fetches batches and hands them to the Handler until ctx ends. Then it
// stops fetching, lets the in-flight batch finish and the Deferred outcomes
// arrive (see DrainTimeout), settles them and returns nil. Fetch failures (a
// server restart) are retried; only a closed connection ends Run with an
// error (wrapping nats.ErrConnectionClosed). Several goroutines may call Run
// on one Consumer.
func (c *Consumer) Run(ctx context.Context) error {
	c.log.Debug().Msg("consume loop started")
	// The handler's ctx and the deferred waits' survive Run's ctx for DrainTimeout.
	hctx, hcancel := context.WithCancel(context.WithoutCancel(ctx))
	defer hcancel()
	var busy atomic.Int64 // batches handled or awaiting Deferred outcomes
	stopDrain := context.AfterFunc(ctx, func() {
		t := time.AfterFunc(c.cfg.DrainTimeout, func() {
			if busy.Load() > 0 {
				c.log.Warn().Dur("drain_timeout", c.cfg.DrainTimeout).Msg("work still in flight at drain timeout; cancelling it")
			}
			hcancel()
		})
		context.AfterFunc(hctx, func() { t.Stop() })
	})
	defer stopDrain()
	var settling sync.WaitGroup

	batches, free := make(chan []jetstream.Msg), make(chan struct{})
	fetchErr := make(chan error, 1)
	go func() {
		defer close(batches)
		fetchErr <- c.fetchLoop(ctx, batches, free)
	}()
	for msgs := range batches {
		busy.Add(1)
		c.process(hctx, msgs, &busy, &settling)
		if !c.cfg.Prefetch {
			free <- struct{}{}
		}
	}
	err := <-fetchErr
	if err != nil {
		hcancel() // a closed connection settles nothing
	}
	settling.Wait()
	if err != nil {
		return err
	}
	if c.bus.nc.IsConnected() {
		if err := c.bus.nc.FlushTimeout(5 * time.Second); err != nil {
			c.log.Warn().Err(err).Msg("flush acks at drain")
		}
	}
	c.log.Debug().Msg("consume loop drained")
	return nil
}

// fetchLoop fetches batches and sends them on out until ctx ends. Without
// Prefetch it fetches the next batch once the reader says on free that it
// is done with the last one. With Prefetch it fetches the next batch at once
// and holds it, kept in progress, until the reader takes it, or releases it
// when ctx ends.
func (c *Consumer) fetchLoop(ctx context.Context, out chan<- []jetstream.Msg, free <-chan struct{}) error {
	failures := 0
	for ctx.Err() == nil {
		msgs, err := c.fetch(ctx)
		if err == nil && failures > 0 {
			c.log.Info().Int("failures", failures).Msg("fetch works again")
			failures = 0
		}
		if len(msgs) > 0 {
			if !c.cfg.Prefetch {
				out <- msgs // taken at once: the reader is idle
				<-free
			} else if !c.hold(ctx, msgs, out) {
				return nil
			}
		}
		if err == nil || ctx.Err() != nil {
			continue
		}
		if err := c.fetchFailed(ctx, err, &failures); err != nil {
			return err
		}
	}
	return nil
}

// fetchFailed logs a failed fetch, recreates a consumer found missing and
// waits NakDelay before the next try; it returns an error only for a closed
// connection, which ends Run.
func (c *Consumer) fetchFailed(ctx context.Context, err error, failures *int) error {
	if c.bus.nc.IsClosed() {
		return fmt.Errorf("consumer %s: %w", c.cfg.Durable, nats.ErrConnectionClosed)
	}
	*failures++
	c.m.fetchErrors.Inc()
	ev := c.log.Debug()
	if *failures == 1 || *failures%60 == 0 { // not one line per retry during an outage
		ev = c.log.Warn()
	}
	ev.Err(err).Int("failures", *failures).Msg("fetch failed; retrying")
	if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrConsumerDeleted) {
		if err := c.ensure(ctx); err != nil {
			c.log.Error().Err(err).Msg("recreate consumer")
		}
	}
	select {
	case <-ctx.Done():
	case <-time.After(c.cfg.NakDelay):
	}
	return nil
}

// hold keeps a prefetched batch in progress until out's reader takes it
// (true) or ctx ends (false): then the batch is nakked without delay, for
// any loop on the durable to take at once.
func (c *Consumer) hold(ctx context.Context, msgs []jetstream.Msg, out chan<- []jetstream.Msg) bool {
	tick := time.NewTicker(c.cfg.InProgressEvery)
	defer tick.Stop()
	for {
		select {
		case out <- msgs:
			return true
		case <-tick.C:
			for _, m := range msgs {
				if err := m.InProgress(); err != nil {
					c.log.Debug().Err(err).Msg("in progress (prefetched)")
				}
			}
		case <-ctx.Done():
			for _, m := range msgs {
				if err := m.Nak(); err != nil {
					c.log.Warn().Err(err).Str("subject", m.Subject()).Msg("release prefetched")
				}
			}
			c.released.Add(uint64(len(msgs)))
			return false
		}
	}
}

// fetch waits up to MaxWait for one message, then takes up to Batch-1 more of
// those the first message's metadata says are pending, waiting at most Linger
// for them: a lone message is handled at once and a busy stream gives full
// batches (with Gather: up to Batch-1 more, whatever comes within Gather).
// Both are ordinary pull requests that end on the server's expiry
// (no FetchNoWait: a no-wait request blocked by a full MaxAckPending window
// outlives the client's wait, and no FetchContext: a client that gives up on
// its own clock can miss a message delivered just before expiry, which then
// waits AckWait). So Run notices a cancelled ctx within MaxWait.
func (c *Consumer) fetch(ctx context.Context) ([]jetstream.Msg, error) {
	cons := *c.cons.Load()
	msgs, err := collect(cons.Fetch(1, jetstream.FetchMaxWait(c.cfg.MaxWait)))
	if len(msgs) == 0 || err != nil || c.cfg.Batch == 1 || ctx.Err() != nil {
		return msgs, err
	}
	n, wait := c.cfg.Batch-1, c.cfg.Gather
	if wait == 0 {
		meta, merr := msgs[0].Metadata()
		if merr != nil || meta.NumPending == 0 {
			return msgs, nil
		}
		n, wait = int(min(uint64(n), meta.NumPending)), c.cfg.Linger
	}
	if c.cfg.Gather == 0 || c.cfg.GatherMore == nil {
		more, err := collect(cons.Fetch(n, jetstream.FetchMaxWait(wait)))
		return append(msgs, more...), err
	}
	// Pulls of as many messages as GatherMore expects, until it expects
	// none, a pull ends short (on Gather's end) or the batch is full.
	end := time.Now().Add(wait)
	for n > 0 {
		want := c.cfg.GatherMore(subjectsOf(msgs))
		if want == 0 {
			break
		}
		if want < 0 || want > n {
			want = n
		}
		left := time.Until(end)
		if left < time.Millisecond {
			break
		}
		more, err := collect(cons.Fetch(want, jetstream.FetchMaxWait(left)))
		msgs, n = append(msgs, more...), n-len(more)
		if err != nil || len(more) < want || ctx.Err() != nil {
			return msgs, err
		}
	}
	return msgs, nil
}

func subjectsOf(msgs []jetstream.Msg) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m.Subject()
	}
	return out
}

func collect(b jetstream.MessageBatch, err error) ([]jetstream.Msg, error) {
	if err != nil {
		return nil, err
	}
	var msgs []jetstream.Msg
	for m := range b.Messages() {
		msgs = append(msgs, m)
	}
	return msgs, batchErr(b)
}

// batchErr is the error that ended a pull, nil for its expiry.
func batchErr(b jetstream.MessageBatch) error {
	if err := b.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) &&
		!errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, nats.ErrTimeout) {
		return err
	}
	return nil
}

// delivery is a fetched message: the JetStream one, which the loop settles,
// and what the handler sees of it.
type delivery struct {
	raw jetstream.Msg
	msg Msg
}

func newDelivery(m jetstream.Msg) delivery {
	d := delivery{raw: m, msg: Msg{Subject: m.Subject(), Data: m.Data(), Header: m.Headers(), Deliveries: 1}}
	d.msg.ID = d.msg.Header.Get(MsgIDHeader)
	if meta, err := m.Metadata(); err == nil {
		d.msg.Deliveries, d.msg.Stream, d.msg.Sequence = meta.NumDelivered, meta.Stream, meta.Sequence.Stream
	}
	return d
}

// process handles one batch and settles each message by its outcome; the
// Deferred ones are settled by a goroutine on settling while Run goes on.
// busy is decremented once nothing of the batch is left in flight.
func (c *Consumer) process(hctx context.Context, msgs []jetstream.Msg, busy *atomic.Int64, settling *sync.WaitGroup) {
	c.fetched.Add(uint64(len(msgs)))
	var todo []delivery
	for _, m := range msgs {
		d := newDelivery(m)
		if d.msg.Deliveries > uint64(c.cfg.MaxDeliver) {
			c.deadLetter(hctx, d, Invalid("max deliveries exceeded", fmt.Errorf("delivery %d of %d: the previous attempt did not finish", d.msg.Deliveries, c.cfg.MaxDeliver)))
			continue
		}
		todo = append(todo, d)
	}
	if len(todo) == 0 {
		busy.Add(-1)
		return
	}
	batch := make([]Msg, len(todo))
	for i, d := range todo {
		batch[i] = d.msg
	}

	stop := c.keepInProgress(todo)
	start := time.Now()
	errs := c.handle(hctx, batch)
	c.m.batch.Observe(time.Since(start).Seconds())
	c.m.batchSize.Observe(float64(len(batch)))
	stop()
	c.batches.Add(1)

	var later []delivery
	var waits []func(context.Context) error
	for i, d := range todo {
		if def, ok := errs[i].(deferred); ok {
			c.deferred.Add(1)
			later, waits = append(later, d), append(waits, def.wait)
			continue
		}
		c.settle(hctx, d, errs[i])
	}
	if len(later) == 0 {
		busy.Add(-1)
		return
	}
	settling.Add(1)
	go func() {
		defer settling.Done()
		defer busy.Add(-1)
		// Each message is settled as soon as its own wait returns (a long
		// generation does not hold back the acks, and the MaxAckPending room,
		// of the short ones handled beside it) and kept in progress until
		// then.
		stop := c.keepInProgress(later)
		defer stop()
		var each sync.WaitGroup
		for i, d := range later {
			each.Go(func() { c.settleDeferred(hctx, d, waits[i]) })
		}
		each.Wait()
	}()
}

// settleDeferred settles d by what wait returns.
func (c *Consumer) settleDeferred(hctx context.Context, d delivery, wait func(context.Context) error) {
	err := errNoWait
	if wait != nil {
		err = wait(hctx)
	}
	c.settle(hctx, d, err)
}

// keepInProgress sends InProgress for ds every InProgressEvery until stop is
// called; those settled meanwhile are skipped by the server (their acks went
// first on the same connection).
func (c *Consumer) keepInProgress(ds []delivery) (stop func()) {
	done := make(chan struct{})
	keeper := make(chan struct{})
	go func() {
		defer close(keeper)
		tick := time.NewTicker(c.cfg.InProgressEvery)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				for _, d := range ds {
					if err := d.raw.InProgress(); err != nil {
						c.log.Debug().Err(err).Msg("in progress")
					}
				}
			}
		}
	}()
	return func() {
		close(done)
		<-keeper
	}
}

// settle acks, dead-letters or nakks d by its outcome err.
func (c *Consumer) settle(ctx context.Context, d delivery, err error) {
	switch {
	case err == nil:
		if aerr := d.raw.Ack(); aerr != nil {
			c.log.Warn().Err(aerr).Str("subject", d.msg.Subject).Msg("ack")
		}
		c.acked.Add(1)
		c.m.ack.Inc()
	case errors.Is(err, ErrInvalid):
		c.deadLetter(ctx, d, err)
	case d.msg.Deliveries >= uint64(c.cfg.MaxDeliver):
		c.deadLetter(ctx, d, Invalid("max deliveries exceeded", err))
	default:
		c.msgLog(c.log.Warn(), d).Err(err).Msg("transient failure; nak with delay")
		c.nak(d)
	}
}

func (c *Consumer) handle(ctx context.Context, msgs []Msg) (errs []error) {
	defer func() {
		if r := recover(); r != nil {
			c.log.Error().Interface("panic", r).Msg("handler panicked; the batch counts as a transient failure")
			errs = fill(len(msgs), fmt.Errorf("handler panic: %v", r))
		}
	}()
	errs = c.h.Handle(ctx, msgs)
	if len(errs) != len(msgs) {
		c.log.Error().Int("outcomes", len(errs)).Int("msgs", len(msgs)).Msg("handler returned the wrong number of outcomes")
		errs = fill(len(msgs), fmt.Errorf("handler returned %d outcomes for %d messages", len(errs), len(msgs)))
	}
	return errs
}

func fill(n int, err error) []error {
	errs := make([]error, n)
	for i := range errs {
		errs[i] = err
	}
	return errs
}

func (c *Consumer) nak(d delivery) {
	if err := d.raw.NakWithDelay(c.cfg.NakDelay); err != nil {
		c.log.Warn().Err(err).Str("subject", d.msg.Subject).Msg("nak")
	}
	c.nakked.Add(1)
	c.m.nak.Inc()
}

func (c *Consumer) msgLog(ev *zerolog.Event, d delivery) *zerolog.Event {
	ev = ev.Str("subject", d.msg.Subject).Uint64("deliveries", d.msg.Deliveries)
	if d.msg.Sequence != 0 {
		ev = ev.Uint64("seq", d.msg.Sequence)
	}
	if d.msg.ID != "" {
		ev = ev.Str("request_id", d.msg.ID)
	}
	return ev
}

// deadLetter writes the DLQ record, then terminates the message. When the DLQ
// publish fails the message is nakked, to be tried again.
func (c *Consumer) deadLetter(ctx context.Context, d delivery, err error) {
	reason := InvalidReason(err)
	rec := DLQRecord{
		Reason:     reason,
		Stage:      c.cfg.Stage,
		Subject:    d.msg.Subject,
		Deliveries: d.msg.Deliveries,
		Headers:    d.msg.Header,
		Data:       d.msg.Data,
		Time:       time.Now().UTC(),
	}
	if full := err.Error(); full != reason {
		rec.Error = full
	}
	msgID := ""
	if d.msg.Stream != "" {
		rec.Stream, rec.Sequence = d.msg.Stream, d.msg.Sequence
		msgID = fmt.Sprintf("dlq/%s/%s/%d", c.cfg.Stage, d.msg.Stream, d.msg.Sequence)
	}
	token := c.cfg.DLQToken(d.msg.Subject)
	if ValidToken(token) != nil {
		token = "unknown"
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if perr := c.bus.PublishDLQ(pctx, c.cfg.Stage, token, rec, msgID); perr != nil {
		c.msgLog(c.log.Error(), d).Err(perr).Str("reason", reason).Msg("dead-letter publish failed; nak instead")
		c.dlqFailed.Add(1)
		c.m.dlqFailed.Inc()
		c.nak(d)
		return
	}
	if terr := d.raw.TermWithReason(reason); terr != nil {
		c.log.Warn().Err(terr).Str("subject", d.msg.Subject).Msg("term")
	}
	c.dead.Add(1)
	c.m.dead.Inc()
	c.msgLog(c.log.Warn(), d).Str("reason", reason).AnErr("cause", err).Msg("message dead-lettered")
	if c.cfg.OnDeadLetter != nil {
		octx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		c.cfg.OnDeadLetter(octx, rec)
	}
}
