package pipeline_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

// A publish with a msg id whose ack does not come within the JetStream
// client's own request timeout (a caller's context without a deadline gets
// its 5s; the reply was lost with a cluster node that died, as TestChaos
// found, here a subscriber that answers nothing and no stream) is sent
// again, not failed: once the stream is there it is stored.
func TestPublishRetriesClientTimeout(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out the client's 5 s request timeout (make test runs it)")
	}
	_, b := pipelinetest.StartBus(t)
	silent, err := b.Conn().SubscribeSync("quiet.a") // a responder that never replies
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := b.Publish(context.Background(), "quiet.a", []byte("x"), "quiet/1", nil)
		done <- err
	}()
	// The first try reached the silent subscriber: it times out after 5s.
	if _, err := silent.NextMsg(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := b.JetStream().CreateStream(ctx, jetstream.StreamConfig{Name: "QUIET", Subjects: []string{"quiet.>"}}); err != nil {
		t.Fatal(err)
	}
	if err := silent.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Publish = %v, want it stored by a retry", err)
		}
	case <-ctx.Done():
		t.Fatal("Publish still runs")
	}
	s, err := b.JetStream().Stream(ctx, "QUIET")
	if err != nil {
		t.Fatal(err)
	}
	if info, err := s.Info(ctx); err != nil || info.State.Msgs != 1 {
		t.Fatalf("QUIET holds %+v, %v; want the message once", info.State, err)
	}
}
