package pipeline

import (
	"context"
	"sync"
)

// Group is a set of goroutines that share one lifetime: the consume loops,
// sweeps and heartbeats of a worker. They run under the group's context,
// which ends when the parent context ends or Stop is called; Wait blocks
// until every one has returned and gives the first error. A goroutine that
// fails does not stop the others (a consume loop fails only when the
// connection is closed, and then they all do).
type Group struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	err    error
}

// NewGroup returns an empty group whose goroutines run until ctx ends or
// Stop is called.
func NewGroup(ctx context.Context) *Group {
	gctx, cancel := context.WithCancel(ctx)
	return &Group{ctx: gctx, cancel: cancel}
}

// Context is the context the group's goroutines run under.
func (g *Group) Context() context.Context { return g.ctx }

// Go runs f(ctx) in a goroutine of the group, with the group's context.
func (g *Group) Go(f func(ctx context.Context) error) {
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		if err := f(g.ctx); err != nil {
			g.mu.Lock()
			if g.err == nil {
				g.err = err
			}
			g.mu.Unlock()
		}
	}()
}

// Consume runs loops consume loops of c (see Consumer.Run).
func (g *Group) Consume(c *Consumer, loops int) {
	for range max(loops, 1) {
		g.Go(c.Run)
	}
}

// Stop ends the group's context: the consume loops drain and the other
// goroutines are told to return. It does not wait; see Wait.
func (g *Group) Stop() { g.cancel() }

// Wait blocks until every goroutine of the group has returned and returns
// the first error. The group's context is released then.
func (g *Group) Wait() error {
	g.wg.Wait()
	g.cancel()
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.err
}
