package pipeline

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// StreamMsg is a message read back from a stream by Tail.
type StreamMsg struct {
	Subject string
	Seq     uint64    // its stream sequence
	Time    time.Time // when the server stored it
	Data    []byte
}

// Tail returns the newest messages (at most limit) of stream whose subjects
// match filter (lf.events.train.<job>, lf.route.>), oldest first. It reads
// with consumers of its own, deleted once read, from a start sequence
// moved back until limit matches are found or the stream's first message is
// reached, so a few recent messages of a long stream cost a short read.
// Messages stored while it reads may or may not be included.
func (b *Bus) Tail(ctx context.Context, stream, filter string, limit int) ([]StreamMsg, error) {
	if limit < 1 {
		return nil, fmt.Errorf("%w: tail of %s: limit %d, want at least 1", ErrInvalidOption, stream, limit)
	}
	s, err := b.js.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("tail %s of %s: %w", filter, stream, err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		return nil, fmt.Errorf("tail %s of %s: %w", filter, stream, err)
	}
	var matching uint64
	for _, n := range info.State.Subjects {
		matching += n
	}
	first, last := info.State.FirstSeq, info.State.LastSeq
	if matching == 0 || last < first {
		return nil, nil
	}
	window := uint64(limit) * 4
	for {
		start := first
		if last-first >= window {
			start = last - window + 1
		}
		msgs, err := b.readRange(ctx, stream, filter, start, last)
		if err != nil {
			return nil, fmt.Errorf("tail %s of %s: %w", filter, stream, err)
		}
		if len(msgs) >= limit || start == first || uint64(len(msgs)) >= matching {
			if len(msgs) > limit {
				msgs = msgs[len(msgs)-limit:]
			}
			return msgs, nil
		}
		window *= 4
	}
}

// readRange reads the messages matching filter from sequence start up to
// last (or the end of the stream), with a consumer of its own that it
// deletes at once (rather than when the server finds it inactive). Not an
// ordered consumer: each fetch of one replaces its server consumer by a
// new one, deleting the old in the background, so a read of several
// fetches could return before its consumers were gone.
func (b *Bus) readRange(ctx context.Context, stream, filter string, start, last uint64) ([]StreamMsg, error) {
	name := "tail_" + nuid.Next()
	c, err := b.js.CreateConsumer(ctx, stream, jetstream.ConsumerConfig{
		Name: name, FilterSubjects: []string{filter}, DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: start,
		AckPolicy: jetstream.AckNonePolicy, MemoryStorage: true, InactiveThreshold: tailInactive})
	if err != nil {
		return nil, err
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = b.js.DeleteConsumer(dctx, stream, name)
	}()
	var out []StreamMsg
	for {
		// The messages are stored already: a fetch that waited for a
		// whole batch would wait out its expiry whenever fewer match.
		batch, err := c.FetchNoWait(256)
		if err != nil {
			return out, err
		}
		got := 0
		done := false
		for m := range batch.Messages() {
			got++
			md, err := m.Metadata()
			if err != nil {
				return out, err
			}
			if md.Sequence.Stream > last {
				done = true
				continue
			}
			out = append(out, StreamMsg{Subject: m.Subject(), Seq: md.Sequence.Stream, Time: md.Timestamp, Data: m.Data()})
			if md.NumPending == 0 || md.Sequence.Stream == last {
				done = true
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) {
			return out, err
		}
		if done || got == 0 {
			return out, ctx.Err()
		}
	}
}

// tailInactive is how long the server keeps a consumer of readRange that
// its reader left behind (a reader that died before deleting it).
const tailInactive = time.Minute
