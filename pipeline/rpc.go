package pipeline

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// Interactive request/reply with a streamed reply, over core NATS.
//
// A caller publishes a request on lf.rpc.<model> with a reply inbox and a
// cancel subject (header Lf-Cancel: lf.rpc.cancel.<id>, on the servers' side
// of the bus, so that a server needs no access to the caller's inbox). One server of the queue group rpc-<model>
// takes it and publishes to the inbox, in order: a "start" message at once,
// any number of "chunk" messages, then one "final" or "error" message (header
// Lf-Rpc names the kind). The caller publishes an empty message on the
// cancel subject when it goes away; the server's handler context then ends.

// RPC subjects, headers and message kinds.
const (
	RPCPrefix       = "lf.rpc."
	RPCCancelPrefix = "lf.rpc.cancel." // + a unique id: the subject a caller cancels on
	HeaderRPCKind   = "Lf-Rpc"
	HeaderCancel    = "Lf-Cancel"
	HeaderRequestID = "Lf-Request-Id"
	HeaderTraceID   = "Lf-Trace-Id"

	RPCStart     = "start"
	RPCKeepalive = "keepalive" // sent every RPCKeepaliveEvery while a handler runs
	RPCChunk     = "chunk"
	RPCFinal     = "final"
	RPCError     = "error"
)

// DefaultRPCIdle is how long StreamRPC waits for the next reply message;
// servers send a keepalive every RPCKeepaliveEvery, so a long generation
// without chunks is not mistaken for a dead server.
const (
	DefaultRPCIdle    = 60 * time.Second
	RPCKeepaliveEvery = 10 * time.Second
)

var (
	// ErrNoResponders is returned by StreamRPC when no server listens on the
	// subject.
	ErrNoResponders = errors.New("no rpc server for the subject")
	// ErrRPCTimeout is returned by StreamRPC when the server went silent.
	ErrRPCTimeout = errors.New("rpc reply timed out")
	// ErrRPCFailed wraps the body of an "error" reply.
	ErrRPCFailed = errors.New("rpc failed")
)

// RPCSubject is the request subject of a model's interactive path.
func RPCSubject(name string) string { return RPCPrefix + name }

// RPCQueue is the queue group of a model's servers: each request goes to one.
func RPCQueue(name string) string { return "rpc-" + name }

// RPCRequest is one request a server is handling.
type RPCRequest struct {
	Data      []byte
	RequestID string
	TraceID   string
	nc        *nats.Conn
	reply     string
}

// Send publishes a reply message of kind (RPCChunk, RPCFinal or RPCError).
func (r *RPCRequest) Send(kind string, data []byte) error {
	m := &nats.Msg{Subject: r.reply, Data: data, Header: nats.Header{HeaderRPCKind: []string{kind}}}
	if err := r.nc.PublishMsg(m); err != nil {
		return fmt.Errorf("rpc reply %s: %w", kind, err)
	}
	return nil
}

// RPCServer is a running queue subscription; Stop ends it.
type RPCServer struct {
	sub    *nats.Subscription
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// ServeRPC subscribes subject in queue group queue and runs h in a goroutine
// of its own for each request, under a context that ends when the caller
// cancels, or when ctx ends or Stop is called. While h runs, a keepalive
// request goes to the caller every RPCKeepaliveEvery; when the caller's inbox
// is gone (no responders) h's context is cancelled too.
func (b *Bus) ServeRPC(ctx context.Context, subject, queue string, h func(ctx context.Context, req *RPCRequest)) (*RPCServer, error) {
	return b.serveRPC(ctx, subject, queue, RPCKeepaliveEvery, h)
}

func (b *Bus) serveRPC(ctx context.Context, subject, queue string, every time.Duration, h func(ctx context.Context, req *RPCRequest)) (*RPCServer, error) {
	if h == nil {
		return nil, fmt.Errorf("%w: rpc handler required", ErrInvalidOption)
	}
	sctx, cancel := context.WithCancel(ctx)
	s := &RPCServer{cancel: cancel}
	nc := b.nc
	sub, err := nc.QueueSubscribe(subject, queue, func(m *nats.Msg) {
		if m.Reply == "" {
			return
		}
		req := &RPCRequest{Data: m.Data, nc: nc, reply: m.Reply,
			RequestID: m.Header.Get(HeaderRequestID), TraceID: m.Header.Get(HeaderTraceID)}
		rctx, rcancel := context.WithCancel(sctx)
		var csub *nats.Subscription
		// Only a cancel subject of the form StreamRPC makes: a caller
		// cannot make the server subscribe anything else.
		if c := m.Header.Get(HeaderCancel); strings.HasPrefix(c, RPCCancelPrefix) && ValidToken(c[len(RPCCancelPrefix):]) == nil {
			csub, _ = nc.Subscribe(c, func(*nats.Msg) { rcancel() })
		}
		_ = req.Send(RPCStart, nil)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer rcancel()
			if csub != nil {
				defer func() { _ = csub.Unsubscribe() }()
			}
			done := make(chan struct{})
			defer close(done)
			go func() {
				t := time.NewTicker(every)
				defer t.Stop()
				for {
					select {
					case <-done:
						return
					case <-t.C:
						// A request: with nobody on the inbox (the caller
						// is gone without cancelling) the server answers
						// no responders, and the handler is cancelled.
						m := &nats.Msg{Subject: req.reply, Header: nats.Header{HeaderRPCKind: []string{RPCKeepalive}}}
						if _, err := nc.RequestMsg(m, every/2); errors.Is(err, nats.ErrNoResponders) {
							rcancel()
							return
						}
					}
				}
			}()
			h(rctx, req)
		}()
	})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("rpc subscribe %s: %w", subject, err)
	}
	s.sub = sub
	return s, nil
}

// Stop unsubscribes, lets the running handlers finish (their contexts are
// cancelled when cancelRunning), and waits for them.
func (s *RPCServer) Stop(cancelRunning bool) {
	_ = s.sub.Unsubscribe()
	if cancelRunning {
		s.cancel()
	}
	s.wg.Wait()
	s.cancel()
}

// RPCFailure is the error of an "error" reply; it matches ErrRPCFailed.
type RPCFailure struct{ Body []byte }

func (e *RPCFailure) Error() string { return fmt.Sprintf("%v: %s", ErrRPCFailed, e.Body) }

// Unwrap returns ErrRPCFailed.
func (e *RPCFailure) Unwrap() error { return ErrRPCFailed }

// RPCCall is a request for StreamRPC.
type RPCCall struct {
	Subject   string
	Data      []byte
	RequestID string
	TraceID   string
	Idle      time.Duration // longest wait for the next reply message (default DefaultRPCIdle)
}

// StreamRPC sends a request and calls onStart once a server has taken it,
// onChunk for each chunk, and returns the final message's body. An "error"
// reply returns a *RPCFailure holding its body. When
// ctx ends, or the server stays silent for Idle, it publishes the cancel and
// returns. With no server on the subject it returns ErrNoResponders.
func (b *Bus) StreamRPC(ctx context.Context, call RPCCall, onStart func(), onChunk func([]byte) error) ([]byte, error) {
	if call.Idle <= 0 {
		call.Idle = DefaultRPCIdle
	}
	nc := b.nc
	inbox := nc.NewInbox()
	cancelSubj := RPCCancelPrefix + inbox[strings.LastIndexByte(inbox, '.')+1:]
	ch := make(chan *nats.Msg, 256)
	sub, err := nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return nil, fmt.Errorf("rpc inbox: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	_ = sub.SetPendingLimits(-1, -1)
	hdr := nats.Header{HeaderCancel: []string{cancelSubj}}
	if call.RequestID != "" {
		hdr.Set(HeaderRequestID, call.RequestID)
	}
	if call.TraceID != "" {
		hdr.Set(HeaderTraceID, call.TraceID)
	}
	if err := nc.PublishMsg(&nats.Msg{Subject: call.Subject, Reply: inbox, Data: call.Data, Header: hdr}); err != nil {
		return nil, fmt.Errorf("rpc request %s: %w", call.Subject, err)
	}
	cancel := func() { _ = nc.Publish(cancelSubj, nil) }
	timer := time.NewTimer(call.Idle)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			cancel()
			return nil, ctx.Err()
		case <-timer.C:
			cancel()
			return nil, fmt.Errorf("%w: %s after %v", ErrRPCTimeout, call.Subject, call.Idle)
		case m := <-ch:
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
			timer.Reset(call.Idle)
			if m.Header.Get("Status") == "503" {
				return nil, fmt.Errorf("%w: %s", ErrNoResponders, call.Subject)
			}
			switch m.Header.Get(HeaderRPCKind) {
			case RPCKeepalive:
				if m.Reply != "" {
					_ = m.Respond(nil)
				}
			case RPCStart:
				if onStart != nil {
					onStart()
				}
			case RPCChunk:
				if onChunk != nil {
					if err := onChunk(m.Data); err != nil {
						cancel()
						return nil, err
					}
				}
			case RPCFinal:
				return m.Data, nil
			case RPCError:
				return nil, &RPCFailure{Body: m.Data}
			}
		}
	}
}
