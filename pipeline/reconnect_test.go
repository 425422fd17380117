package pipeline_test

import (
	"context"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

// The bus reconnects after a server restart and the consume loop goes on.
func TestReconnectAfterServerRestart(t *testing.T) {
	dir := t.TempDir()
	e := pipelinetest.StartServerWith(t, pipeline.EmbeddedConfig{DataDir: dir})
	u, err := url.Parse(e.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := pipeline.Connect(ctx, pipeline.ConnConfig{URL: e.ClientURL(), ReconnectWait: 20 * time.Millisecond}, pipelinetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.EnsureTopology(ctx); err != nil {
		t.Fatal(err)
	}
	c := newConsumer(t, b, fastConfig(), pipeline.PerMessage(func(context.Context, pipeline.Msg) error { return nil }))
	runConsumer(t, c)
	publishRequests(t, b, "before", 3)
	pipelinetest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if s := c.Stats(); s.Acked != 3 {
			return fmt.Errorf("stats %+v", s)
		}
		return nil
	})

	e.Shutdown()
	pipelinetest.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if b.Conn().IsConnected() {
			return fmt.Errorf("still connected")
		}
		return nil
	})
	pipelinetest.StartServerWith(t, pipeline.EmbeddedConfig{DataDir: dir, Listen: u.Host})
	pipelinetest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if !b.Conn().IsConnected() {
			return fmt.Errorf("not reconnected")
		}
		return nil
	})
	publishRequests(t, b, "after", 3)
	pipelinetest.CheckFor(t, 15*time.Second, 10*time.Millisecond, func() error {
		if s := c.Stats(); s.Acked != 6 {
			return fmt.Errorf("stats %+v", s)
		}
		return nil
	})
}

// Publishes whose acks a server restart loses are sent again and stored once.
func TestPublisherRetriesAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	e := pipelinetest.StartServerWith(t, pipeline.EmbeddedConfig{DataDir: dir})
	u, err := url.Parse(e.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := pipeline.Connect(ctx, pipeline.ConnConfig{URL: e.ClientURL(), ReconnectWait: 20 * time.Millisecond}, pipelinetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.EnsureTopology(ctx); err != nil {
		t.Fatal(err)
	}
	subj, _ := pipeline.DatasetRawSubject("ds")
	const n = 3000
	publishThrough(t, ctx, b.NewPublisher(32), subj, "ds", n, func() {
		e.Shutdown()
		e = pipelinetest.StartServerWith(t, pipeline.EmbeddedConfig{DataDir: dir, Listen: u.Host})
	})
	if got := streamMsgs(t, b, pipeline.StreamDatasets); got != n {
		t.Errorf("stream holds %d msgs, want %d", got, n)
	}
}
