package gateway

import (
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// HTTP hardening defaults. A body must arrive at MinBodyRate on average
// after a grace period, so a client trickling a byte every few seconds is
// cut off while a large upload at any usable speed is not; there is no
// fixed total read or write timeout (server-sent events stream for as long
// as a generation runs).
const (
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultIdleTimeout       = 2 * time.Minute
	DefaultMinBodyRate       = 1024 // bytes per second
	DefaultBodyGrace         = 10 * time.Second
	DefaultMaxConnections    = 4096
)

// ErrBodyTooSlow is returned by a request body that arrives under the
// minimum rate; the request gets 408.
var ErrBodyTooSlow = errors.New("request body arrives too slowly")

// rateBody enforces a minimum average rate on a request body: before each
// read, the connection's read deadline is set to the moment the bytes read
// so far would be due (start + grace + read/minRate). The deadline is
// cleared once the body ends, so a stream that follows is never cut. It
// wraps a copy of the server's request, so the server still drains (and on
// a timeout, closes) the original.
type rateBody struct {
	body    io.ReadCloser
	rc      *http.ResponseController
	start   time.Time
	grace   time.Duration
	minRate int64
	read    int64
	done    bool
}

func newRateBody(w http.ResponseWriter, body io.ReadCloser, minRate int64, grace time.Duration) *rateBody {
	return &rateBody{body: body, rc: http.NewResponseController(w), start: time.Now(), grace: grace, minRate: minRate}
}

func (b *rateBody) Read(p []byte) (int, error) {
	if b.done {
		return b.body.Read(p)
	}
	due := b.start.Add(b.grace + time.Duration(float64(b.read)/float64(b.minRate)*float64(time.Second)))
	_ = b.rc.SetReadDeadline(due) // a writer without deadlines (tests' recorders) reads unlimited
	n, err := b.body.Read(p)
	b.read += int64(n)
	if err != nil {
		b.done = true
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			// The deadline stays: the server's drain of the rest fails
			// at once, and the connection closes after the 408.
			return n, ErrBodyTooSlow
		}
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}

func (b *rateBody) Close() error {
	if !b.done {
		b.done = true
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	return b.body.Close()
}

// limitListener accepts at most max connections at once; further ones wait
// in the kernel's backlog until one closes.
type limitListener struct {
	net.Listener
	sem       chan struct{}
	closed    chan struct{}
	closeOnce sync.Once
}

func newLimitListener(ln net.Listener, max int) net.Listener {
	return &limitListener{Listener: ln, sem: make(chan struct{}, max), closed: make(chan struct{})}
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	case <-l.closed:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.sem }}, nil
}

func (l *limitListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
