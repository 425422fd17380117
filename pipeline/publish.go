package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/largeforge/largeforge/schemas"
)

// Header holds a message's headers: NATS headers, whose keys are
// case-sensitive (Set and Get use the key as given).
type Header = nats.Header

// MsgIDHeader is the header that carries a message's stable id
// (Nats-Msg-Id): the stream stores a second message with the same id inside
// its duplicate window once.
const MsgIDHeader = jetstream.MsgIDHeader

// DefaultAsyncAckTimeout is how long a Publisher waits for one publish ack
// before the publish counts as failed.
const DefaultAsyncAckTimeout = 30 * time.Second

func newMsg(subject string, data []byte, msgID string, hdr nats.Header) *nats.Msg {
	m := &nats.Msg{Subject: subject, Data: data, Header: hdr}
	if msgID != "" {
		if m.Header == nil {
			m.Header = nats.Header{}
		} else {
			m.Header = maps.Clone(hdr) // never change the caller's map
		}
		m.Header.Set(jetstream.MsgIDHeader, msgID)
	}
	return m
}

// Publish stores data on subject and waits for the stream's ack. msgID, when
// not empty, is sent as Nats-Msg-Id: a second publish with the same id inside
// the duplicate window is acked with PubAck.Duplicate set and no error. Like
// a Publisher's, a publish that finds no stream responding (a stream without
// a leader while its cluster elects one) is sent again, with backoff, for up
// to DefaultPublishRetryFor or until ctx ends; one whose ack is lost
// (disconnect, timeout) too when it has a msg id.
func (b *Bus) Publish(ctx context.Context, subject string, data []byte, msgID string, hdr nats.Header) (*jetstream.PubAck, error) {
	m := newMsg(subject, data, msgID, hdr)
	var since time.Time
	var prev error // the failure retried
	for n := 0; ; n++ {
		ack, err := b.js.PublishMsg(ctx, m, noLibRetry)
		if err == nil {
			return ack, nil
		}
		if ctx.Err() != nil && prev != nil {
			err = fmt.Errorf("%w (%w)", ctx.Err(), prev)
		}
		if n == 0 {
			since = time.Now()
		}
		// No responders: no server took it, so sending it again stores nothing twice.
		// A deadline that is not ctx's is the JetStream client's own request
		// timeout (ctx has none): an ack lost like any other.
		clientTimeout := errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil
		again := errors.Is(err, jetstream.ErrNoStreamResponse) || (msgID != "" && (retryable(err) || clientTimeout))
		if !again || ctx.Err() != nil || time.Since(since) >= DefaultPublishRetryFor {
			return nil, fmt.Errorf("publish %s (msg id %q): %w", subject, msgID, err)
		}
		prev = err
		select {
		case <-time.After(min(publishRetryBase<<min(n, 6), publishRetryMax)):
		case <-ctx.Done():
			return nil, fmt.Errorf("publish %s (msg id %q): %w (%w)", subject, msgID, ctx.Err(), err)
		}
	}
}

// Publisher publishes asynchronously with at most window acks pending. It is
// safe for concurrent use. A publish with a msg id whose ack is lost
// (disconnect, timeout, no stream leader) is sent again with the same
// Nats-Msg-Id, with backoff, for up to DefaultPublishRetryFor after its
// first failure (WithRetryFor): long enough for a cluster to elect a
// stream's new leader and for the client to reconnect to another node. The
// duplicate window keeps it stored once. After the first publish that fails
// for good the Publisher stays failed: Publish and Flush return that error
// (wrapping ErrPublisherFailed).
type Publisher struct {
	js       jetstream.JetStream
	slots    chan struct{}
	window   int
	retryFor time.Duration

	mu      sync.Mutex
	err     error
	failed  chan struct{} // closed with the first failure (err)
	nFailed int
	pending int
	idle    chan struct{} // closed when pending drops to 0; nil while 0
	acked   int
	dups    int
	retried int
	maxSeq  uint64
	retries map[*nats.Msg]retrying // messages being retried
	closing bool
}

// Publisher retries: a publish with a msg id that failed for want of an ack
// (disconnect, timeout, no stream response) is sent again, which the stream's
// duplicate window makes safe, for up to DefaultPublishRetryFor after its
// first failure: a failure and its retries all fall inside DuplicateWindow
// (the first copy may be stored up to DefaultAsyncAckTimeout before its
// failure is known). The pause between tries doubles from 50ms to 2s.
const (
	DefaultPublishRetryFor = time.Minute
	publishRetryBase       = 50 * time.Millisecond
	publishRetryMax        = 2 * time.Second
)

// retrying is a message being retried: its tries so far and when it first
// failed.
type retrying struct {
	n     int
	since time.Time
}

// PublisherOption configures a Publisher.
type PublisherOption func(*Publisher)

// WithRetryFor sets how long after its first failure a publish with a msg
// id is retried (default DefaultPublishRetryFor; 0 or less: never). A
// stream that does not exist answers like one without a leader, so a
// publish to it fails only once this has passed.
func WithRetryFor(d time.Duration) PublisherOption {
	return func(p *Publisher) { p.retryFor = max(d, 0) }
}

// noLibRetry turns off the client library's own quick retries after "no
// responders": the Publisher's retries (with backoff) cover that case.
var noLibRetry = jetstream.WithRetryAttempts(0)

func retryable(err error) bool {
	return errors.Is(err, nats.ErrDisconnected) || errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, nats.ErrReconnectBufExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, jetstream.ErrAsyncPublishTimeout) ||
		errors.Is(err, jetstream.ErrTooManyStalledMsgs)
}

// retry schedules m again when err allows it; it reports whether it did.
func (p *Publisher) retry(m *nats.Msg, err error) bool {
	if m.Header.Get(jetstream.MsgIDHeader) == "" || !retryable(err) {
		return false
	}
	p.mu.Lock()
	r, ok := p.retries[m]
	if !ok {
		r.since = time.Now()
	}
	if p.closing || p.err != nil || time.Since(r.since) >= p.retryFor { // a failed Publisher stays failed
		p.mu.Unlock()
		return false
	}
	wait := min(publishRetryBase<<min(r.n, 6), publishRetryMax)
	r.n++
	p.retries[m] = r
	p.retried++
	p.mu.Unlock()
	time.AfterFunc(wait, func() {
		if _, err := p.js.PublishMsgAsync(m, noLibRetry); err != nil {
			p.fail(m, err)
		}
	})
	return true
}

// fail ends m with err unless it is retried.
func (p *Publisher) fail(m *nats.Msg, err error) {
	if p.retry(m, err) {
		return
	}
	p.done(m, fmt.Errorf("%w: %s (msg id %q): %w", ErrPublisherFailed, m.Subject, m.Header.Get(jetstream.MsgIDHeader), err), nil)
}

// NewPublisher returns a Publisher whose window of pending acks is window
// (values below 1 mean 1).
func (b *Bus) NewPublisher(window int, opts ...PublisherOption) *Publisher {
	if window < 1 {
		window = 1
	}
	p := &Publisher{slots: make(chan struct{}, window), window: window, retryFor: DefaultPublishRetryFor,
		retries: map[*nats.Msg]retrying{}, failed: make(chan struct{})}
	for _, o := range opts {
		o(p)
	}
	js, err := jetstream.New(b.nc,
		jetstream.WithPublishAsyncMaxPending(2*window), // the slots channel is the bound; this only must never stall first
		jetstream.WithPublishAsyncTimeout(DefaultAsyncAckTimeout),
		jetstream.WithPublishAsyncAckHandler(func(_ jetstream.JetStream, m *nats.Msg, ack *jetstream.PubAck) {
			p.done(m, nil, ack)
		}),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, m *nats.Msg, err error) {
			p.fail(m, err)
		}),
	)
	if err != nil { // only invalid options fail, and ours are valid
		panic(fmt.Sprintf("pipeline: jetstream.New: %v", err))
	}
	p.js = js
	return p
}

func (p *Publisher) done(m *nats.Msg, err error, ack *jetstream.PubAck) {
	p.mu.Lock()
	delete(p.retries, m)
	if err != nil {
		p.nFailed++
		if p.err == nil {
			p.err = err
			close(p.failed)
		}
	} else {
		p.acked++
		if ack != nil && ack.Duplicate {
			p.dups++
		}
		if ack != nil && ack.Sequence > p.maxSeq {
			p.maxSeq = ack.Sequence
		}
	}
	p.pending--
	if p.pending == 0 && p.idle != nil {
		close(p.idle)
		p.idle = nil
	}
	p.mu.Unlock()
	<-p.slots
}

// Publish sends one message and returns once it is on its way; it blocks while
// window acks are pending. It returns an earlier asynchronous failure instead
// of publishing.
func (p *Publisher) Publish(ctx context.Context, subject string, data []byte, msgID string, hdr nats.Header) error {
	if err := p.Err(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("publish %s: %w", subject, err)
	}
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("publish %s: %w", subject, ctx.Err())
	}
	p.mu.Lock()
	if p.err != nil {
		err := p.err
		p.mu.Unlock()
		<-p.slots
		return err
	}
	p.pending++
	if p.pending == 1 {
		p.idle = make(chan struct{})
	}
	p.mu.Unlock()
	m := newMsg(subject, data, msgID, hdr)
	if _, err := p.js.PublishMsgAsync(m, noLibRetry); err != nil {
		if !retryable(err) || msgID == "" {
			p.done(m, fmt.Errorf("%w: %s (msg id %q): %w", ErrPublisherFailed, subject, msgID, err), nil)
			return p.Err()
		}
		p.fail(m, err)
	}
	return nil
}

// Flush waits until every pending publish is acked (or failed) and returns the
// first failure, if any.
func (p *Publisher) Flush(ctx context.Context) error {
	p.mu.Lock()
	idle := p.idle
	p.mu.Unlock()
	if idle != nil {
		select {
		case <-idle:
		case <-ctx.Done():
			return fmt.Errorf("flush publisher (%d pending): %w", p.Pending(), ctx.Err())
		}
	}
	return p.Err()
}

// Close flushes (see Flush) and then releases the Publisher's reply
// subscription; publishes still pending when ctx ends fail. The Publisher must
// not be used afterwards.
func (p *Publisher) Close(ctx context.Context) error {
	err := p.Flush(ctx)
	p.mu.Lock()
	p.closing = true
	p.mu.Unlock()
	p.js.CleanupPublisher()
	if err == nil {
		err = p.Err()
	}
	return err
}

// Failed is closed when the first publish fails for good (Err says how):
// for a producer that may publish nothing more for a while, to stop at once.
func (p *Publisher) Failed() <-chan struct{} { return p.failed }

// Err returns the first asynchronous failure, or nil.
func (p *Publisher) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Pending is the number of publishes waiting for their ack.
func (p *Publisher) Pending() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pending
}

// PublisherStats counts a Publisher's outcomes.
type PublisherStats struct {
	Acked      int // acks received (duplicates included)
	Duplicates int // acks that reported a duplicate Nats-Msg-Id
	Failed     int
	Pending    int
	Retried    int // publishes sent again after a lost ack (see DefaultPublishRetryFor)
	// MaxSequence is the highest stream sequence acked (a duplicate's ack
	// carries the sequence of the message stored first).
	MaxSequence uint64
}

// Stats returns the counts so far.
func (p *Publisher) Stats() PublisherStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return PublisherStats{Acked: p.acked, Duplicates: p.dups, Failed: p.nFailed, Pending: p.pending, Retried: p.retried, MaxSequence: p.maxSeq}
}

// DLQRecord is what the dead-letter stream stores for a message that could
// not be processed (the wire contract's schemas.DLQRecord).
type DLQRecord = schemas.DLQRecord

// DecodeDLQRecord parses a record read from LF_DLQ (schemas.DecodeDLQRecord);
// errors wrap ErrBadDLQRecord.
func DecodeDLQRecord(data []byte) (DLQRecord, error) { return schemas.DecodeDLQRecord(data) }

// DLQMsgIDHeader carries the dead-lettered message's own Nats-Msg-Id, if it had one.
const DLQMsgIDHeader = "Lf-Original-Msg-Id"

// PublishDLQ writes rec to lf.dlq.<stage>.<token> with msgID as Nats-Msg-Id
// (empty: none). Data is cut so that the record fits the server's max_payload.
// Stage and Time are filled in when empty.
func (b *Bus) PublishDLQ(ctx context.Context, stage, token string, rec DLQRecord, msgID string) error {
	subj, err := DLQSubject(stage, token)
	if err != nil {
		return fmt.Errorf("dlq: %w", err)
	}
	if rec.Stage == "" {
		rec.Stage = stage
	}
	if rec.Time.IsZero() {
		rec.Time = time.Now().UTC()
	}
	if rec.DataSize == 0 {
		rec.DataSize = len(rec.Data)
	}
	var hdr nats.Header
	if id := firstHeader(rec.Headers, jetstream.MsgIDHeader); id != "" {
		hdr = nats.Header{DLQMsgIDHeader: []string{id}}
	}
	body, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("dlq: encode record: %w", err)
	}
	limit := int(b.nc.MaxPayload()) - 1024 // headers and subject
	if limit > MaxMsgSize-1024 {
		limit = MaxMsgSize - 1024
	}
	if len(body) > limit {
		over := len(body) - limit
		keep := len(rec.Data) - (over*3+3)/4 - 4 // base64: 4 chars per 3 bytes
		if keep < 0 {
			keep = 0
		}
		rec.Data, rec.Truncated = rec.Data[:keep], true
		if body, err = json.Marshal(rec); err != nil {
			return fmt.Errorf("dlq: encode record: %w", err)
		}
	}
	if _, err := b.Publish(ctx, subj, body, msgID, hdr); err != nil {
		return fmt.Errorf("dlq: %w", err)
	}
	return nil
}

func firstHeader(h map[string][]string, key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}
