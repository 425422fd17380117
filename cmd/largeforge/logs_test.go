package main

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

// TestFatalErrorIsOneCriticalLine: a command that fails writes, in JSON
// mode, exactly one line: the log shape at level CRITICAL, named for the
// command; in console mode the plain "largeforge: <error>".
func TestFatalErrorIsOneCriticalLine(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildBinary(t)
	args := []string{"datasets", "list", "--nats", "nats://127.0.0.1:1", "--wait-for-nats", "0s"}
	var stderr bytes.Buffer
	cmd := exec.Command(bin, append(args, "--log-format", "json")...)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err == nil {
		t.Fatal("datasets list without a server succeeded")
	}
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("%d lines on stderr, want 1:\n%s", len(lines), stderr.String())
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil {
		t.Fatalf("not a JSON line: %v\n%s", err, lines[0])
	}
	if rec["level"] != "CRITICAL" || rec["logger"] != "largeforge.datasets.list" || !strings.Contains(rec["message"].(string), "connect to NATS") {
		t.Errorf("fatal line %v", rec)
	}
	out, err := exec.Command(bin, append(args, "--log-format", "console")...).CombinedOutput()
	if err == nil || !strings.HasPrefix(string(out), "largeforge: connect to NATS") {
		t.Errorf("console mode: %v\n%s", err, out)
	}
}
