package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/largeforge/largeforge/internal/testenv"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/schemas"
)

// TestUpServesExperts runs `largeforge up --experts FILE` with two experts
// over stories260K, both with max_tokens 64: "tiny", which no --model
// serves, gets an infer worker of its own (live in lf_workers, answering a
// completion, its context 64 tokens); "stories", which --model serves
// already, is skipped, so the --model's worker serves it as given (its
// model's context of 2048).
func TestUpServesExperts(t *testing.T) {
	if testing.Short() {
		t.Skip("runs largeforge up with its models (make test runs it)")
	}
	modelDir := filepath.Dir(testenv.SharedFile(t, "models/stories260K/model.safetensors"))
	bin := buildBinary(t)
	dir := t.TempDir()
	experts := []schemas.ExpertConfig{
		{Name: "tiny", ModelPath: modelDir, MaxTokens: 64, Keywords: []string{"tiny"}},
		{Name: "stories", ModelPath: modelDir, MaxTokens: 64, Keywords: []string{"story"}},
	}
	data, _ := json.Marshal(experts)
	file := filepath.Join(dir, "experts.json")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	port, hport := freePort(t), freePort(t)
	natsURL := "nats://127.0.0.1:" + strconv.Itoa(port)
	env := []string{"LARGEFORGE_NATS=" + natsURL}
	up := start(t, bin, env, "up", "--data-dir", filepath.Join(dir, "lf-data"), "--listen", "127.0.0.1:"+strconv.Itoa(port),
		"--model", "stories="+modelDir, "--experts", file, "--http", "127.0.0.1:"+strconv.Itoa(hport),
		"--metrics-addr", "127.0.0.1:0", "--log-format", "json", "--log-level", "warning")
	waitUp(t, bin, env)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	bus, err := pipeline.Connect(ctx, pipeline.ConnConfig{URL: natsURL}, pipelinetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	waitLive(t, bus, "tiny", 30*time.Second)
	waitLive(t, bus, "stories", 30*time.Second)

	url := "http://127.0.0.1:" + strconv.Itoa(hport)
	status, resp, bad := completion(t, url, map[string]any{"model": "tiny", "prompt": "Once upon a time", "max_tokens": 8, "temperature": 0})
	if status != http.StatusOK || resp.Model != "tiny" || len(resp.Choices) != 1 || resp.Usage.CompletionTokens == 0 {
		t.Fatalf("completion from tiny: %d %+v %+v\n%s", status, resp, bad, up.out)
	}
	// 50 tokens after this prompt are over tiny's context of 64, not over
	// the context of stories, whose expert entry up skipped.
	prompt := strings.Repeat("Once upon a time there was a little dog. ", 2)
	status, _, bad = completion(t, url, map[string]any{"model": "tiny", "prompt": prompt, "max_tokens": 50})
	if status != http.StatusBadRequest || bad.Error.Param != "max_tokens" || !strings.HasPrefix(bad.Error.Message, "Invalid max_tokens: 50 is over the limit of ") {
		t.Fatalf("tiny over its context: %d %+v", status, bad)
	}
	status, resp, bad = completion(t, url, map[string]any{"model": "stories", "prompt": prompt, "max_tokens": 50, "temperature": 0})
	if status != http.StatusOK || resp.Model != "stories" {
		t.Fatalf("stories, served by --model: %d %+v %+v", status, resp, bad)
	}
}

// TestUpRestartServesExperts: up --experts (no --model) killed and started
// again at once on the same data directory serves its expert again; the
// heartbeat its first run left in lf_workers (within the TTL) is not taken
// for a live worker.
func TestUpRestartServesExperts(t *testing.T) {
	if testing.Short() {
		t.Skip("runs largeforge up twice (make test runs it)")
	}
	modelDir := filepath.Dir(testenv.SharedFile(t, "models/stories260K/model.safetensors"))
	bin := buildBinary(t)
	dir := t.TempDir()
	data, _ := json.Marshal([]schemas.ExpertConfig{{Name: "tiny", ModelPath: modelDir, MaxTokens: 64}})
	file := filepath.Join(dir, "experts.json")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	port, hport := freePort(t), freePort(t)
	env := []string{"LARGEFORGE_NATS=nats://127.0.0.1:" + strconv.Itoa(port)}
	args := []string{"up", "--data-dir", filepath.Join(dir, "lf-data"), "--listen", "127.0.0.1:" + strconv.Itoa(port), "--experts", file,
		"--http", "127.0.0.1:" + strconv.Itoa(hport), "--metrics-addr", "127.0.0.1:0", "--log-format", "json", "--log-level", "warning"}
	url := "http://127.0.0.1:" + strconv.Itoa(hport)
	answers := func(p *proc) {
		t.Helper()
		pipelinetest.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
			resp, err := http.Get(url + "/health")
			if err != nil {
				return fmt.Errorf("%w; up says:\n%s", err, p.out)
			}
			resp.Body.Close()
			status, _, bad := completion(t, url, map[string]any{"model": "tiny", "prompt": "Once upon a time", "max_tokens": 4})
			if status != http.StatusOK {
				return fmt.Errorf("tiny: %d %+v", status, bad)
			}
			return nil
		})
	}
	first := start(t, bin, env, args...)
	answers(first)
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = first.cmd.Wait()
	answers(start(t, bin, env, args...))
}
