package pipeline_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

// TestStreamRPC runs an echo server that streams the request back word by
// word, and checks chunks, the final reply, errors, cancel and no responders.
func TestStreamRPC(t *testing.T) {
	e := pipelinetest.StartServer(t)
	bus := pipelinetest.Connect(t, e)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cancelled := make(chan string, 1)
	srv, err := pipeline.ServeRPCEvery(bus, ctx, pipeline.RPCSubject("echo"), pipeline.RPCQueue("echo"), 50*time.Millisecond, func(ctx context.Context, req *pipeline.RPCRequest) {
		body := string(req.Data)
		switch {
		case body == "fail":
			_ = req.Send(pipeline.RPCError, []byte(`{"message":"failed"}`))
			return
		case body == "forever":
			for ctx.Err() == nil {
				_ = req.Send(pipeline.RPCChunk, []byte("x"))
				time.Sleep(5 * time.Millisecond)
			}
			cancelled <- req.RequestID
			return
		}
		for _, w := range strings.Fields(body) {
			_ = req.Send(pipeline.RPCChunk, []byte(w))
		}
		_ = req.Send(pipeline.RPCFinal, []byte("done:"+req.RequestID))
	})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop(true)

	tests := []struct {
		name       string
		subject    string
		body       string
		wantChunks string
		wantFinal  string
		wantErr    error
	}{
		{name: "stream", subject: "echo", body: "a b c", wantChunks: "abc", wantFinal: "done:r1"},
		{name: "error", subject: "echo", body: "fail", wantErr: pipeline.ErrRPCFailed},
		{name: "no responders", subject: "nobody", body: "x", wantErr: pipeline.ErrNoResponders},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var chunks strings.Builder
			final, err := bus.StreamRPC(ctx, pipeline.RPCCall{Subject: pipeline.RPCSubject(tc.subject), Data: []byte(tc.body), RequestID: "r1"}, nil,
				func(b []byte) error { chunks.Write(b); return nil })
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err %v, want %v", err, tc.wantErr)
			}
			if chunks.String() != tc.wantChunks || string(final) != tc.wantFinal {
				t.Errorf("chunks %q final %q, want %q %q", chunks.String(), final, tc.wantChunks, tc.wantFinal)
			}
		})
	}

	t.Run("cancel", func(t *testing.T) {
		cctx, ccancel := context.WithCancel(ctx)
		n := 0
		_, err := bus.StreamRPC(cctx, pipeline.RPCCall{Subject: pipeline.RPCSubject("echo"), Data: []byte("forever"), RequestID: "r2"}, nil,
			func([]byte) error {
				if n++; n == 3 {
					ccancel()
				}
				return nil
			})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err %v", err)
		}
		select {
		case id := <-cancelled:
			if id != "r2" {
				t.Errorf("cancelled %q", id)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the server's handler was not cancelled")
		}
	})

	t.Run("caller gone without cancel", func(t *testing.T) {
		// A request whose reply inbox nobody listens on: the keepalive
		// finds no responders and the handler is cancelled.
		err := bus.Conn().PublishMsg(&nats.Msg{Subject: pipeline.RPCSubject("echo"), Reply: bus.Conn().NewInbox(), Data: []byte("forever"),
			Header: nats.Header{pipeline.HeaderRequestID: []string{"r3"}}})
		if err != nil {
			t.Fatal(err)
		}
		select {
		case id := <-cancelled:
			if id != "r3" {
				t.Errorf("cancelled %q", id)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the handler of a vanished caller was not cancelled")
		}
	})

	t.Run("keepalive answered", func(t *testing.T) {
		// A 3s non-streamed call with a 1s idle limit sees keepalives every
		// 50ms and completes (only a process stalled for most of a second
		// could miss them all).
		slow, err := pipeline.ServeRPCEvery(bus, ctx, pipeline.RPCSubject("late"), pipeline.RPCQueue("late"), 50*time.Millisecond, func(ctx context.Context, req *pipeline.RPCRequest) {
			select {
			case <-ctx.Done():
				return
			case <-time.After(3 * time.Second):
			}
			_ = req.Send(pipeline.RPCFinal, []byte("ok"))
		})
		if err != nil {
			t.Fatal(err)
		}
		defer slow.Stop(true)
		final, err := bus.StreamRPC(ctx, pipeline.RPCCall{Subject: pipeline.RPCSubject("late"), Data: []byte("x"), Idle: time.Second}, nil, nil)
		if err != nil || string(final) != "ok" {
			t.Fatalf("final %q, err %v", final, err)
		}
	})

	t.Run("idle timeout", func(t *testing.T) {
		slow, err := bus.ServeRPC(ctx, pipeline.RPCSubject("slow"), pipeline.RPCQueue("slow"), func(ctx context.Context, req *pipeline.RPCRequest) {
			<-ctx.Done()
		})
		if err != nil {
			t.Fatal(err)
		}
		defer slow.Stop(true)
		_, err = bus.StreamRPC(ctx, pipeline.RPCCall{Subject: pipeline.RPCSubject("slow"), Data: []byte("x"), Idle: 100 * time.Millisecond}, nil, nil)
		if !errors.Is(err, pipeline.ErrRPCTimeout) {
			t.Fatalf("err %v, want ErrRPCTimeout", err)
		}
	})
}
