package pipeline_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

// TestKVOpenRetries: opening a bucket whose stream info request goes
// unanswered (a cluster electing the stream's leader after a node's loss:
// TestChaos saw an ingest fail on "kv bucket lf_datasets: context deadline
// exceeded") is retried until the answers come back; where the caller set
// no deadline the attempts end after kvOpenWait with the attempt's error.
func TestKVOpenRetries(t *testing.T) {
	defer pipeline.SetKVOpen(100*time.Millisecond, time.Second)()
	e, _ := pipelinetest.StartBus(t) // the topology
	mute := &atomic.Bool{}
	url, drop := dropProxy(t, e.ClientURL(), mute)
	ctx, cancel := context.WithTimeout(context.Background(), pipelinetest.MinWait)
	defer cancel()
	bus := connectTo(t, ctx, url)

	mute.Store(true)
	_, err := bus.KV(context.Background(), pipeline.BucketJobs) // no deadline: kvOpenWait
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("open with every answer lost and no deadline: %v, want a deadline exceeded after kvOpenWait", err)
	}

	done := make(chan error, 1)
	go func() {
		_, err := bus.KV(ctx, pipeline.BucketJobs)
		done <- err
	}()
	time.Sleep(300 * time.Millisecond) // pacing: a few attempts lost (the open succeeds however long this is)
	mute.Store(false)
	drop() // the client reconnects, as to another node
	if err := <-done; err != nil {
		t.Fatalf("open retried after the answers came back: %v", err)
	}
}

// TestKVWriteResentOnce: a KV create whose answer is lost (as one in
// flight at a cluster node that is killed: TestChaos saw a submit fail on
// "create job ...: context deadline exceeded") is sent again under its msg
// id once answers come back, and the resend finds the first copy stored:
// the create succeeds with that copy's revision instead of failing on a
// key that exists.
func TestKVWriteResentOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("loses writes for seconds on purpose (make test runs it)")
	}
	defer pipeline.SetKVAttemptWait(100 * time.Millisecond)()
	e, admin := pipelinetest.StartBus(t)
	mute := &atomic.Bool{}
	url, drop := dropProxy(t, e.ClientURL(), mute)
	ctx, cancel := context.WithTimeout(context.Background(), pipelinetest.MinWait)
	defer cancel()
	bus := connectTo(t, ctx, url)
	kv, err := bus.KV(ctx, pipeline.BucketJobs)
	if err != nil {
		t.Fatal(err)
	}
	// lastSeq is the last sequence of the bucket's stream (read past the
	// proxy).
	lastSeq := func() uint64 {
		t.Helper()
		s, err := admin.JetStream().Stream(ctx, "KV_"+pipeline.BucketJobs)
		if err != nil {
			t.Fatal(err)
		}
		return s.CachedInfo().State.LastSeq
	}
	// lost runs write with its answers lost until the proxy drops the
	// connection, then checks the write was stored once (a resend without
	// the msg id would store a second copy) and returned the key's
	// revision.
	lost := func(name string, write func() (uint64, error)) {
		t.Helper()
		before := lastSeq()
		mute.Store(true) // the server's answers are lost from now on
		done := make(chan error, 1)
		var rev uint64
		go func() {
			var err error
			rev, err = write()
			done <- err
		}()
		time.Sleep(300 * time.Millisecond) // pacing: a few attempts lost (the outcome does not depend on it)
		mute.Store(false)
		drop() // the client reconnects, as to another node
		if err := <-done; err != nil {
			t.Fatalf("%s resent after its answer was lost: %v", name, err)
		}
		en, err := kv.Get(ctx, "once")
		if err != nil {
			t.Fatal(err)
		}
		if en.Revision != rev {
			t.Errorf("%s returned revision %d, the key holds %d", name, rev, en.Revision)
		}
		if after := lastSeq(); after != before+1 || rev != after {
			t.Errorf("%s stored %d messages (revision %d), want one, its revision returned", name, after-before, rev)
		}
	}
	lost("create", func() (uint64, error) { return kv.Create(ctx, "once", []byte("a")) })
	en, err := kv.Get(ctx, "once")
	if err != nil {
		t.Fatal(err)
	}
	lost("update", func() (uint64, error) { return kv.Update(ctx, "once", []byte("b"), en.Revision) })
	lost("put", func() (uint64, error) { return kv.Put(ctx, "once", []byte("c")) })
}

// connectTo connects to url as the test, closed at its end.
func connectTo(t *testing.T, ctx context.Context, url string) *pipeline.Bus {
	t.Helper()
	bus, err := pipeline.Connect(ctx, pipeline.ConnConfig{URL: url, Name: t.Name()}, pipelinetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bus.Close)
	return bus
}

// TestKVWriteRefusesInvalidKey: a write publishes on the key's subject
// itself, so it checks the key as jetstream's Put does.
func TestKVWriteRefusesInvalidKey(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), pipelinetest.MinWait)
	defer cancel()
	_, bus := pipelinetest.StartBus(t)
	kv, err := bus.KV(ctx, pipeline.BucketJobs)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"", "a b", "a.>", "a.*", ".a", "a."} {
		if _, err := kv.Put(ctx, key, []byte("x")); !errors.Is(err, jetstream.ErrInvalidKey) {
			t.Errorf("put %q: %v, want ErrInvalidKey", key, err)
		}
	}
	if _, err := kv.Put(ctx, "jobs/a_b-c=d.e", []byte("x")); err != nil {
		t.Errorf("put of a valid key: %v", err)
	}
}
