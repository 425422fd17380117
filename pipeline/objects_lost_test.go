package pipeline_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

// TestObjectCallsBoundEachWait: under a caller's long deadline (a
// training checkpoint's upload has 30 minutes), an object store or KV call
// whose answer is lost (as one in flight at a cluster node that is killed)
// fails after one wait (objectChunkWait, a List after a few; KV:
// kvRequestWait), not at the deadline: a train worker wedged in a
// checkpoint upload's List (its watch's consumer create request
// unanswered), or in opening lf_models (the stream info request), kept its
// job's message in progress for minutes in TestChaos.
func TestObjectCallsBoundEachWait(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out each bounded call (make test runs it)")
	}
	defer pipeline.SetObjectWait(200 * time.Millisecond)()
	defer pipeline.SetKVRequestWait(200 * time.Millisecond)()
	e, _ := pipelinetest.StartBus(t) // the topology
	mute := &atomic.Bool{}
	url := muteProxy(t, e.ClientURL(), mute)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	bus, err := pipeline.Connect(ctx, pipeline.ConnConfig{URL: url, Name: t.Name()}, pipelinetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	objs, err := bus.Objects(ctx, pipeline.BucketArtifacts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := objs.Put(ctx, "kept", bytes.NewReader([]byte("x"))); err != nil {
		t.Fatal(err)
	}
	kv, err := bus.KV(ctx, pipeline.BucketJobs)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "kept", []byte("x")); err != nil {
		t.Fatal(err)
	}
	mute.Store(true) // the server's answers are lost from now on
	for name, call := range map[string]func() error{
		"put":       func() error { _, err := objs.Put(ctx, "lost", bytes.NewReader(make([]byte, 300<<10))); return err },
		"info":      func() error { _, err := objs.Info(ctx, "kept"); return err },
		"get":       func() error { _, err := objs.Get(ctx, "kept"); return err },
		"delete":    func() error { return objs.Delete(ctx, "kept") },
		"list":      func() error { _, err := objs.List(ctx); return err },
		"open":      func() error { _, err := bus.Objects(ctx, pipeline.BucketArtifacts); return err },
		"kv get":    func() error { _, err := kv.Get(ctx, "kept"); return err },
		"kv put":    func() error { _, err := kv.Put(ctx, "kept", []byte("y")); return err },
		"kv update": func() error { _, err := kv.Update(ctx, "kept", []byte("y"), 1); return err },
		"kv create": func() error { _, err := kv.Create(ctx, "new", []byte("y")); return err },
		"kv delete": func() error { return kv.Delete(ctx, "kept") },
	} {
		done := make(chan error, 1)
		go func() { done <- call() }()
		select {
		case err := <-done:
			if err == nil {
				t.Errorf("%s with its answer lost: no error", name)
			}
		case <-time.After(pipelinetest.MinWait): // a guard against the hang, not a speed
			t.Fatalf("%s with its answer lost still waits after %v (its ctx has 30 minutes)", name, pipelinetest.MinWait)
		}
	}
}

// muteProxy forwards one client's connection to the server at url
// (nats://host:port); while mute is set what the server sends is dropped,
// the connection kept open.
func muteProxy(t *testing.T, url string, mute *atomic.Bool) string {
	t.Helper()
	proxy, _ := dropProxy(t, url, mute)
	return proxy
}

// dropProxy is muteProxy with a drop that closes the connections it holds (a
// node killed: what it had not sent is lost, and the client reconnects
// through the proxy).
func dropProxy(t *testing.T, url string, mute *atomic.Bool) (string, func()) {
	t.Helper()
	var mu sync.Mutex
	var conns []net.Conn
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	drop := func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
		conns = nil
	}
	t.Cleanup(drop)
	addr := url[len("nats://"):]
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", addr)
			if err != nil {
				c.Close()
				return
			}
			mu.Lock()
			conns = append(conns, c, s)
			mu.Unlock()
			go func() { _, _ = io.Copy(s, c) }()
			go func() {
				buf := make([]byte, 32<<10)
				for {
					n, err := s.Read(buf)
					if n > 0 && !mute.Load() {
						if _, err := c.Write(buf[:n]); err != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return "nats://" + ln.Addr().String(), drop
}
