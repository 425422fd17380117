package pipelinetest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/largeforge/largeforge/pipeline"
)

// DLQRecords reads every record now on LF_DLQ under filter (a subject such
// as lf.dlq.results.<job>, wildcards allowed), in stream order.
func DLQRecords(t testing.TB, b *pipeline.Bus, filter string) []pipeline.DLQRecord {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// An ephemeral consumer, deleted after: callers poll, and the stream
	// allows only so many consumers.
	cons, err := b.JetStream().CreateConsumer(ctx, pipeline.StreamDLQ, jetstream.ConsumerConfig{FilterSubject: filter,
		AckPolicy: jetstream.AckNonePolicy, InactiveThreshold: time.Minute})
	if err != nil {
		t.Fatalf("read %s: %v", filter, err)
	}
	defer func() {
		_ = b.JetStream().DeleteConsumer(context.WithoutCancel(ctx), pipeline.StreamDLQ, cons.CachedInfo().Name)
	}()
	var recs []pipeline.DLQRecord
	for {
		batch, err := cons.FetchNoWait(1000)
		if err != nil {
			t.Fatalf("read %s: %v", filter, err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			r, err := pipeline.DecodeDLQRecord(m.Data())
			if err != nil {
				t.Fatalf("%s: %v", m.Subject(), err)
			}
			recs = append(recs, r)
		}
		if err := batch.Error(); err != nil {
			t.Fatalf("read %s: %v", filter, err)
		}
		if n == 0 {
			return recs
		}
	}
}
