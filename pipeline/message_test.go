package pipeline_test

import (
	"context"
	"testing"
	"time"

	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

// TestHandlerGetsMsg checks what a handler sees of a message: its subject,
// data, headers, id and place in the stream.
func TestHandlerGetsMsg(t *testing.T) {
	_, b := pipelinetest.StartBus(t)
	got := make(chan pipeline.Msg, 1)
	c := newConsumer(t, b, fastConfig(), pipeline.PerMessage(func(_ context.Context, m pipeline.Msg) error {
		got <- m
		return nil
	}))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	subj, err := pipeline.RequestSubject("job1", "m")
	if err != nil {
		t.Fatal(err)
	}
	ack, err := b.Publish(ctx, subj, []byte("r1"), "job1/r1", pipeline.Header{"Lf-Trace": {"t-1"}})
	if err != nil {
		t.Fatal(err)
	}
	runConsumer(t, c)
	var m pipeline.Msg
	select {
	case m = <-got:
	case <-ctx.Done():
		t.Fatal("no message handled")
	}
	want := pipeline.Msg{Subject: subj, Data: []byte("r1"), ID: "job1/r1", Deliveries: 1, Stream: pipeline.StreamRequests, Sequence: ack.Sequence}
	if m.Subject != want.Subject || string(m.Data) != string(want.Data) || m.ID != want.ID || m.Deliveries != want.Deliveries ||
		m.Stream != want.Stream || m.Sequence != want.Sequence || m.Header.Get("Lf-Trace") != "t-1" {
		t.Fatalf("handler got %+v, want %+v with header Lf-Trace t-1", m, want)
	}
}
