package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/largeforge/largeforge/internal/testenv"
	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

// stallProxy forwards TCP connections to target and, once after messages
// whose protocol line holds pattern have gone from a client to the server,
// stops forwarding that client's bytes before the next one: the client
// (its NATS connection) is stalled mid-publish, by construction, whatever
// the machine's speed.
type stallProxy struct {
	ln      net.Listener
	target  string
	pattern []byte
	after   int

	mu      sync.Mutex
	seen    int
	stalled chan struct{}
}

func newStallProxy(t *testing.T, target, pattern string, after int) *stallProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stallProxy{ln: ln, target: target, pattern: []byte(pattern), after: after, stalled: make(chan struct{})}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(t, c)
		}
	}()
	return p
}

func (p *stallProxy) addr() string { return p.ln.Addr().String() }

func (p *stallProxy) serve(t *testing.T, c net.Conn) {
	defer c.Close()
	s, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	defer s.Close()
	go func() { _, _ = io.Copy(c, s) }()
	buf := make([]byte, 32<<10)
	m := 0 // bytes of pattern matched so far (its first byte recurs nowhere in it)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return
		}
		chunk, cut := buf[:n], -1
		for i, b := range chunk {
			switch {
			case b == p.pattern[m]:
				m++
			case b == p.pattern[0]:
				m = 1
			default:
				m = 0
			}
			if m < len(p.pattern) {
				continue
			}
			m = 0
			p.mu.Lock()
			if p.seen == p.after {
				cut = max(i+1-len(p.pattern), 0)
			}
			p.seen++
			p.mu.Unlock()
			if cut >= 0 {
				break
			}
		}
		if cut >= 0 {
			_, _ = s.Write(chunk[:cut])
			close(p.stalled)
			_, _ = io.Copy(io.Discard, c) // hold the connection, forwarding nothing more
			return
		}
		if _, err := s.Write(chunk); err != nil {
			return
		}
	}
}

// TestBatchPublishResumedAfterGatewayCrash kills a gateway (SIGKILL) while
// it publishes a batch's requests and starts another: the new gateway
// takes the dead one's publisher lease once it has run out, publishes the
// batch again, and the batch completes with every custom_id once.
//
// The first gateway is provably mid-publish at the kill: its NATS
// connection goes through a proxy that forwards the first 40 of the 200
// requests and nothing after them.
func TestBatchPublishResumedAfterGatewayCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs a batch across a gateway crash")
	}
	modelDir := filepath.Dir(testenv.SharedFile(t, "models/stories260K/model.safetensors"))
	bin := buildBinary(t)
	dir := t.TempDir()
	const n, forwarded = 200, 40
	var file bytes.Buffer
	for i := range n {
		fmt.Fprintf(&file, `{"custom_id":"c%d","method":"POST","url":"/v1/completions","body":{"model":"stories","prompt":"Once upon a time %d","max_tokens":4,"temperature":0}}`+"\n", i, i)
	}
	port := freePort(t)
	natsAddr := "127.0.0.1:" + strconv.Itoa(port)
	env := []string{"LARGEFORGE_NATS=nats://" + natsAddr}
	up := start(t, bin, env, "up", "--data-dir", filepath.Join(dir, "lf-data"), "--listen", natsAddr, "--model", "stories="+modelDir,
		"--metrics-addr", "127.0.0.1:0", "--log-format", "json", "--log-level", "warning")
	waitUp(t, bin, env)

	proxy := newStallProxy(t, natsAddr, "PUB lf.req.", forwarded)
	gateway := func(nats string) (*proc, string) {
		addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
		p := start(t, bin, []string{"LARGEFORGE_NATS=nats://" + nats}, "gateway", "--http", addr, "--batch-publish-lease", "2s",
			"--metrics-addr", "127.0.0.1:0", "--log-level", "info")
		base := "http://" + addr
		pipelinetest.CheckFor(t, time.Minute, 50*time.Millisecond, func() error {
			res, err := http.Get(base + "/v1/models/stories")
			if err != nil {
				return err
			}
			res.Body.Close()
			if res.StatusCode != http.StatusOK {
				return fmt.Errorf("GET /v1/models/stories: %s", res.Status)
			}
			return nil
		})
		return p, base
	}
	gw1, base := gateway(proxy.addr())

	fileID := uploadFile(t, base, "batch", file.String())
	var b struct {
		ID     string
		Status string
	}
	req := map[string]string{"input_file_id": fileID, "endpoint": "/v1/completions", "completion_window": "24h"}
	if code := postJSON(t, base+"/v1/batches", req, &b); code != http.StatusOK || b.Status != "validating" {
		t.Fatalf("batch created: %d %s", code, b.Status)
	}
	select {
	case <-proxy.stalled:
	case <-time.After(2 * time.Minute):
		t.Fatalf("the gateway published fewer than %d requests; it said:\n%s", forwarded, gw1.out)
	}
	if err := gw1.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = gw1.cmd.Wait()
	j := jobStatus(t, bin, env, b.ID)
	if j.Status != jobs.StatusValidating || j.Publisher == "" {
		t.Fatalf("the batch was not being published at the kill: %s, publisher %q", j.Status, j.Publisher)
	}

	gw2, base := gateway(natsAddr)
	var done struct {
		Status        string
		OutputFileID  *string     `json:"output_file_id"`
		RequestCounts jobs.Counts `json:"request_counts"`
	}
	pipelinetest.CheckFor(t, 3*time.Minute, 100*time.Millisecond, func() error {
		if code := getJSON(t, base+"/v1/batches/"+b.ID, &done); code != http.StatusOK || done.Status != "completed" {
			return fmt.Errorf("batch %d %s %+v", code, done.Status, done.RequestCounts)
		}
		return nil
	})
	if done.RequestCounts != (jobs.Counts{Total: n, Completed: n}) || done.OutputFileID == nil {
		t.Fatalf("completed with %+v, output %v; gateway:\n%s\nup:\n%s", done.RequestCounts, done.OutputFileID, gw2.out, up.out)
	}
	res, err := http.Get(base + "/v1/files/" + *done.OutputFileID + "/content")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	seen := map[string]bool{}
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		var line struct {
			CustomID string `json:"custom_id"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatal(err)
		}
		if seen[line.CustomID] {
			t.Errorf("custom_id %s twice", line.CustomID)
		}
		seen[line.CustomID] = true
	}
	if len(seen) != n {
		t.Errorf("%d distinct custom_ids in the output file, want %d", len(seen), n)
	}
}

// jobStatus reads a job with `largeforge jobs status`.
func jobStatus(t *testing.T, bin string, env []string, id string) jobs.Job {
	t.Helper()
	out, err := runBin(bin, env, "jobs", "status", id)
	if err != nil {
		t.Fatalf("jobs status: %v\n%s", err, out)
	}
	var j jobs.Job
	if err := json.Unmarshal([]byte(out), &j); err != nil {
		t.Fatalf("jobs status: %v\n%s", err, out)
	}
	return j
}

// runBin runs bin with env and returns its standard output.
func runBin(bin string, env []string, args ...string) (string, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.Output()
	return string(out), err
}
