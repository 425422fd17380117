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
	p := b.NewPublisher(32)
	const n = 3000
	for i := range n {
		if i == n/3 {
			e.Shutdown()
			e = pipelinetest.StartServerWith(t, pipeline.EmbeddedConfig{DataDir: dir, Listen: u.Host})
		}
		if err := p.Publish(ctx, subj, []byte(fmt.Sprintf(`{"i":%d}`, i)), fmt.Sprintf("ds/%d", i), nil); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v (stats %+v)", err, p.Stats())
	}
	st := p.Stats()
	t.Logf("publisher stats across the restart: %+v", st)
	if st.Failed != 0 || st.Acked != n {
		t.Errorf("stats = %+v, want %d acked and no failure", st, n)
	}
	if got := streamMsgs(t, b, pipeline.StreamDatasets); got != n {
		t.Errorf("stream holds %d msgs, want %d", got, n)
	}
}
