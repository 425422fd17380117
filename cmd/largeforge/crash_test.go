package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/largeforge/largeforge/dataset"
	"github.com/largeforge/largeforge/internal/samples"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

// buildBinary builds largeforge into a temporary directory.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "largeforge")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func freePort(t *testing.T) int { return pipelinetest.FreePort(t) }

type proc struct {
	cmd *exec.Cmd
	out *bytes.Buffer
}

func start(t *testing.T, bin string, env []string, args ...string) *proc {
	t.Helper()
	return startWithStdin(t, bin, env, nil, args...)
}

// startWithStdin starts bin with stdin (nil: none).
func startWithStdin(t *testing.T, bin string, env []string, stdin *os.File, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	if stdin != nil {
		cmd.Stdin = stdin
	}
	cmd.Env = append(os.Environ(), env...)
	return startCmd(t, cmd)
}

// startCmd starts cmd (its output kept in the proc) and kills it when the
// test ends.
func startCmd(t *testing.T, cmd *exec.Cmd) *proc {
	t.Helper()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _, _ = cmd.Process.Wait() })
	return &proc{cmd: cmd, out: &out}
}

func waitUp(t *testing.T, bin string, env []string) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second) // up loads its models first; a busy machine takes long
	for time.Now().Before(deadline) {
		cmd := exec.Command(bin, "datasets", "list")
		cmd.Env = append(os.Environ(), env...)
		if cmd.Run() == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("largeforge up did not become ready")
}

// TestCrashSafety kills the embedded process and the ingest process with SIGKILL in
// the middle of a large file, starts again, reruns the command on the whole file,
// and checks that every valid record is in the Parquet parts exactly once.
//
// The first run reads the file's first half from a pipe that stays open, so
// it is provably mid-file when killed, whatever the machine's speed.
func TestCrashSafety(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and ingests a large file")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	const n = 150_000
	src := filepath.Join(dir, "big.jsonl")
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := samples.WriteLargeAlpaca(f, n, 400, 7); err != nil {
		t.Fatal(err)
	}
	f.Close()

	port := freePort(t)
	env := []string{"LARGEFORGE_NATS=nats://127.0.0.1:" + strconv.Itoa(port)}
	dataDir := filepath.Join(dir, "lf-data")
	upArgs := []string{"up", "--data-dir", dataDir, "--listen", "127.0.0.1:" + strconv.Itoa(port), "--metrics-addr", "127.0.0.1:0", "--log-format", "json", "--log-level", "warning"}
	ingestArgs := []string{"ingest", "--dataset", "big", "--format", "alpaca", "--log-level", "error", "--wait", "2m", src}
	partsDir := filepath.Join(dataDir, "datasets", "big")

	up := start(t, bin, env, upArgs...)
	waitUp(t, bin, env)
	firstHalf, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	firstHalf = firstHalf[:nthLineEnd(firstHalf, n/2)]
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pw.Close()
	in := startWithStdin(t, bin, env, pr, append(ingestArgs[:len(ingestArgs)-1:len(ingestArgs)-1], "-")...)
	pr.Close()
	go func() { _, _ = pw.Write(firstHalf) }() // ends with EPIPE at the kill
	// Kill both once the sink has written a part, mid-file.
	deadline := time.Now().Add(60 * time.Second)
	for {
		parts, _ := dataset.ListParts(partsDir)
		if len(parts) >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no part written in time; up:\n%s\ningest:\n%s", up.out, in.out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := in.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := up.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	in.cmd.Wait()
	up.cmd.Wait()
	partsBefore, _ := dataset.ListParts(partsDir)
	before := 0
	for _, p := range partsBefore {
		meta, err := dataset.ReadPartMeta(p)
		if err != nil {
			t.Fatal(err)
		}
		before += len(meta.IDs)
	}
	// In flight by construction: the first run's input (half the file) never
	// ended, so it could not have finished.
	t.Logf("killed with %d parts written (%d of the %d records sent)", len(partsBefore), before, n/2)

	up = start(t, bin, env, upArgs...)
	waitUp(t, bin, env)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, ingestArgs...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("rerun: %v\n%s\nup:\n%s", err, out, up.out)
	}
	t.Logf("rerun:\n%s", out)

	parts, err := dataset.ListParts(partsDir)
	if err != nil {
		t.Fatal(err)
	}
	if total := len(partIDsOnce(t, parts)); total != n {
		t.Fatalf("parts hold %d records, want every one of %d exactly once", total, n)
	}
	// No temporary file is left visible as a part.
	leftovers, _ := filepath.Glob(filepath.Join(partsDir, "part-*.tmp*"))
	if len(leftovers) > 0 {
		t.Errorf("temporary files named like parts: %v", leftovers)
	}
}

// partIDsOnce reads the record ids of the Parquet parts at paths and fails
// the test on an id in the parts twice.
func partIDsOnce(t *testing.T, paths []string) map[string]bool {
	t.Helper()
	seen := map[string]bool{}
	for _, p := range paths {
		meta, err := dataset.ReadPartMeta(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range meta.IDs {
			if seen[id] {
				t.Fatalf("record %s is in the parts twice", id)
			}
			seen[id] = true
		}
	}
	return seen
}

// nthLineEnd returns the offset just past the n-th newline of b (len(b) if
// it has fewer).
func nthLineEnd(b []byte, n int) int {
	off := 0
	for range n {
		i := bytes.IndexByte(b[off:], '\n')
		if i < 0 {
			return len(b)
		}
		off += i + 1
	}
	return off
}
