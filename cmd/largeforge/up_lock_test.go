package main

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

// One `up` per data directory: a second one on the same --data-dir exits
// non-zero naming the directory and the first one's pid, and the first goes
// on. A killed `up` leaves its lock file behind but not its lock: the next
// one starts.
func TestUpLocksDataDir(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and starts up three times")
	}
	bin := buildBinary(t)
	dataDir := filepath.Join(t.TempDir(), "lf-data")
	upArgs := func(port int) []string {
		return []string{"up", "--data-dir", dataDir, "--listen", "127.0.0.1:" + strconv.Itoa(port), "--metrics-addr", "127.0.0.1:0", "--log-level", "warning"}
	}
	listening := func(port int) func() error {
		return func() error {
			c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
			if err != nil {
				return err
			}
			return c.Close()
		}
	}
	port := freePort(t)
	first := start(t, bin, nil, upArgs(port)...)
	pipelinetest.CheckFor(t, 60*time.Second, 50*time.Millisecond, listening(port))

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, upArgs(freePort(t))...).CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("a second up on the same --data-dir kept running:\n%s", out)
	}
	if err == nil {
		t.Fatalf("a second up on the same --data-dir exited 0:\n%s", out)
	}
	if want := fmt.Sprintf("%s is in use by process %d", dataDir, first.cmd.Process.Pid); !strings.Contains(string(out), want) {
		t.Fatalf("second up said %q, want it to say %q", out, want)
	}
	if err := listening(port)(); err != nil {
		t.Fatalf("the first up is gone after the second was refused: %v", err)
	}

	if err := first.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = first.cmd.Wait()
	third := freePort(t)
	start(t, bin, nil, upArgs(third)...)
	pipelinetest.CheckFor(t, 60*time.Second, 50*time.Millisecond, listening(third))
}
