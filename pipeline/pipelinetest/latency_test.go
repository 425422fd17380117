package pipelinetest

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// Bytes cross a LatencyProxy whole and in order, and a round trip through
// it takes at least twice its delay (a bound the proxy sets, whatever the
// machine's speed).
func TestLatencyProxy(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(c, c); c.Close() }() // echo
		}
	}()
	const delay = 20 * time.Millisecond
	c, err := net.Dial("tcp", LatencyProxy(t, ln.Addr().String(), delay))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	start := time.Now()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "ping" {
		t.Fatalf("echo %q, %v", got, err)
	}
	if took := time.Since(start); took < 2*delay {
		t.Errorf("round trip %v, want at least %v", took, 2*delay)
	}

	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	go func() { _, _ = c.Write(big) }()
	back := make([]byte, len(big))
	if _, err := io.ReadFull(c, back); err != nil || !bytes.Equal(back, big) {
		t.Fatalf("1 MiB through the proxy came back changed (%v)", err)
	}
}
