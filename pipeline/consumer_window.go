package pipeline

import (
	"context"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

// window is the free room of a continuous Consumer's MaxAckPending window:
// taken when a pull asks for messages, given back when a message is settled
// or a pull ends with fewer than it asked for. Every Run loop of the
// Consumer shares it.
type window struct {
	mu      sync.Mutex
	free    int
	changed chan struct{} // closed and replaced when room is given back
}

func newWindow(size int) *window { return &window{free: size, changed: make(chan struct{})} }

// take waits until at least least is free, then takes all that is free and
// returns it; 0 when ctx ends first.
func (w *window) take(ctx context.Context, least int) int {
	for {
		w.mu.Lock()
		if w.free >= least {
			n := w.free
			w.free = 0
			w.mu.Unlock()
			return n
		}
		changed := w.changed
		w.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return 0
		}
	}
}

// give returns n to the window; a nil window (no Refill) ignores it.
func (w *window) give(n int) {
	if w == nil || n == 0 {
		return
	}
	w.mu.Lock()
	w.free += n
	close(w.changed)
	w.changed = make(chan struct{})
	w.mu.Unlock()
}

// windowLoop is the fetch loop of a continuous Consumer (Refill): it takes
// the window's free room once it is at least Refill, asks for that many
// messages in one pull that ends on the server's expiry (MaxWait) or when
// they have all come, and sends the messages on out as they arrive, each
// with those arrived beside it (at most Batch); what the pull did not bring
// goes back to the window.
func (c *Consumer) windowLoop(ctx context.Context, out chan<- []jetstream.Msg) error {
	failures := 0
	for ctx.Err() == nil {
		n := c.win.take(ctx, c.cfg.Refill)
		if n == 0 {
			continue
		}
		got, err := c.pull(n, out)
		c.win.give(n - got)
		if err == nil && failures > 0 {
			c.log.Info().Int("failures", failures).Msg("fetch works again")
			failures = 0
		}
		if err == nil || ctx.Err() != nil {
			continue
		}
		if err := c.fetchFailed(ctx, err, &failures); err != nil {
			return err
		}
	}
	return nil
}

// pull asks for n messages and sends them on out as they arrive; it returns
// how many came. It reads the pull to its end (expiry, or n messages) even
// when Run's ctx ends meanwhile: a message delivered and not read would wait
// AckWait for its redelivery.
func (c *Consumer) pull(n int, out chan<- []jetstream.Msg) (int, error) {
	cons := *c.cons.Load()
	b, err := cons.Fetch(n, jetstream.FetchMaxWait(c.cfg.MaxWait))
	if err != nil {
		return 0, err
	}
	got := 0
	in := b.Messages()
	for m := range in {
		group := []jetstream.Msg{m}
	arrived:
		for len(group) < c.cfg.Batch {
			select {
			case m, ok := <-in:
				if !ok {
					break arrived
				}
				group = append(group, m)
			default:
				break arrived
			}
		}
		got += len(group)
		out <- group
	}
	return got, batchErr(b)
}
