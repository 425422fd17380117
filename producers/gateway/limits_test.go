package gateway_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/producers/gateway"
)

// startBare serves a gateway with no worker behind it: enough for what
// happens before a request reaches the bus.
func startBare(t *testing.T, cfg gateway.Config) string {
	t.Helper()
	_, bus := pipelinetest.StartBus(t)
	ctx, cancel := context.WithCancel(context.Background())
	g, err := gateway.New(ctx, bus, cfg, pipelinetest.Logger(t), nil, nil)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	return serveGateway(t, ctx, cancel, g, nil)
}

// serveGateway serves g on a loopback port until the test ends, when it
// cancels ctx, checks Serve's error and runs after (when not nil). It
// returns the address.
func serveGateway(t testing.TB, ctx context.Context, cancel context.CancelFunc, g *gateway.Gateway, after func()) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- g.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
		if after != nil {
			after()
		}
	})
	return ln.Addr().String()
}

// TestSlowBodyCutOff: a client that sends its headers and then trickles
// its body gets 408 once the body falls under the minimum rate, and a body
// sent whole is read however large (no fixed total).
func TestSlowBodyCutOff(t *testing.T) {
	addr := startBare(t, gateway.Config{MinBodyRate: 1024, BodyGrace: 500 * time.Millisecond, MaxBodyBytes: 8 << 20})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{")
	// Nothing more is sent: the server must answer 408 and close, whatever
	// the machine's speed (the test only waits for it).
	_ = c.SetReadDeadline(time.Now().Add(time.Minute))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer to a stalled body: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(body), "bytes per second") {
		t.Errorf("stalled body: %d %s, want 408", resp.StatusCode, body)
	}

	// A 4 MB body sent at once is read in full: it is refused for its
	// content (400), not cut off.
	big := `{"model":"stories","prompt":"` + strings.Repeat("a", 4<<20) + `"}`
	r, err := http.Post("http://"+addr+"/v1/completions", "application/json", strings.NewReader(big))
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(r.Body)
	r.Body.Close()
	if r.StatusCode == http.StatusRequestTimeout || r.StatusCode == http.StatusRequestEntityTooLarge {
		t.Errorf("large body sent whole: %d %s", r.StatusCode, body)
	}
}

// TestMaxConnections: with a cap of 2, a third connection is not served
// while two are open, and is served once one closes.
func TestMaxConnections(t *testing.T) {
	addr := startBare(t, gateway.Config{MaxConnections: 2})
	get := func(c net.Conn) (int, error) {
		if _, err := fmt.Fprintf(c, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			return 0, err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return 0, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	var open []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := get(c); err != nil {
			t.Fatal(err)
		}
		open = append(open, c)
	}
	third, err := net.Dial("tcp", addr) // lands in the backlog
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	answered := make(chan error, 1)
	go func() {
		_, err := get(third)
		answered <- err
	}()
	// The third waits while two are served; closing one lets it in. An
	// answer within the watch below can only mean the cap failed (a slow
	// machine makes the watch weaker, never wrong).
	select {
	case err := <-answered:
		t.Fatalf("third connection served while two were open (err %v)", err)
	case <-time.After(2 * time.Second):
	}
	open[0].Close()
	select {
	case err := <-answered:
		if err != nil {
			t.Fatalf("third connection after one closed: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("third connection never served after one closed")
	}
}
