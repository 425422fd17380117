package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/largeforge/largeforge/internal/testenv"
	"github.com/largeforge/largeforge/model/checkpoint"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/producers/gateway"
	"github.com/largeforge/largeforge/storage/modelstore"
)

// model push, ls, ls --versions, pull, rm through the CLI, as admin.
func TestModelStoreCLI(t *testing.T) {
	stories := filepath.Dir(testenv.SharedFile(t, "models/stories260K/model.safetensors"))
	tiny, e, _, ctx := tinyOnRoles(t)
	admin := []string{"--nats=" + e.ClientURL(), "--nats-user=admin", "--nats-password=" + pipelinetest.RolePassword("admin"), "--log-level=error"}
	cli := func(args ...string) string {
		t.Helper()
		out, err := runCLI(t, ctx, append(admin, args...)...)
		if err != nil {
			t.Fatalf("largeforge %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	out := cli("model", "push", "m", stories)
	if !strings.HasPrefix(out, "pushed m ") {
		t.Fatalf("push: %q", out)
	}
	v1 := strings.Fields(out)[2]
	out = cli("model", "push", "m", tiny)
	v2 := strings.Fields(out)[2]
	if out = cli("model", "ls"); !strings.Contains(out, "m  ") || !strings.Contains(out, v2) || strings.Contains(out, v1) {
		t.Fatalf("ls: want m at %s only:\n%s", v2, out)
	}
	out = cli("model", "ls", "--versions")
	if !strings.Contains(out, v1) || !strings.Contains(out, v2+" *") || strings.Index(out, v1) > strings.Index(out, v2) {
		t.Fatalf("ls --versions: want %s then %s *:\n%s", v1, v2, out)
	}
	dst := filepath.Join(t.TempDir(), "pulled")
	if out = cli("model", "pull", "m", dst); !strings.Contains(out, v2) {
		t.Fatalf("pull: %q", out)
	}
	for _, f := range []string{"config.json", "model.safetensors", "tokenizer.json"} {
		a, _ := os.ReadFile(filepath.Join(tiny, f))
		b, err := os.ReadFile(filepath.Join(dst, f))
		if err != nil || !bytes.Equal(a, b) {
			t.Fatalf("pulled %s differs: %v", f, err)
		}
	}
	if out = cli("model", "rm", "m"); !strings.Contains(out, "current "+v1) {
		t.Fatalf("rm: %q", out)
	}
	if out = cli("model", "rm", "m"); !strings.Contains(out, "no version left") {
		t.Fatalf("rm of the last version: %q", out)
	}
	missing := filepath.Join(t.TempDir(), "none")
	if out, err := runCLI(t, ctx, append(admin, "model", "pull", "m", missing)...); err == nil || !strings.Contains(err.Error(), "not in lf_models") {
		t.Fatalf("pull of a removed name: %v\n%s", err, out)
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Fatalf("a refused pull left %s: %v", missing, err)
	}
}

// An infer worker (infer credential) started with --model m fetches m's
// current version from lf_models and keeps serving it when another version
// is pushed; a fresh fetch gets the new one.
func TestWorkerKeepsLoadedModelVersion(t *testing.T) {
	stories := filepath.Dir(testenv.SharedFile(t, "models/stories260K/model.safetensors"))
	tiny, e, admin, ctx := tinyOnRoles(t)
	ms, err := modelstore.New(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	v1, err := ms.Push(ctx, "m", stories)
	if err != nil {
		t.Fatal(err)
	}
	cache := t.TempDir()
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := runCLI(t, wctx, "--nats="+e.ClientURL(), "--nats-user=infer", "--nats-password="+pipelinetest.RolePassword("infer"), "--log-level=error",
			"worker", "--model", "m", "--model-cache", cache)
		done <- err
	}()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
	})
	waitLive(t, admin, "m", 30*time.Second)
	reg := prometheus.NewRegistry()
	g, err := gateway.New(ctx, admin, gateway.Config{}, pipelinetest.Logger(t), reg, reg)
	if err != nil {
		t.Fatal(err)
	}
	url := serveGateway(t, ctx, g)
	ask := func() string {
		t.Helper()
		status, resp, bad := completion(t, url, map[string]any{"model": "m", "prompt": "Once upon a time", "max_tokens": 8, "temperature": 0})
		if status != 200 || len(resp.Choices) != 1 {
			t.Fatalf("completion: %d %+v %+v", status, resp, bad)
		}
		return resp.Choices[0].Text
	}
	before := ask()
	v2, err := ms.Push(ctx, "m", tiny)
	if err != nil {
		t.Fatal(err)
	}
	if after := ask(); after != before {
		t.Fatalf("after a push of %s the worker answers %q, before %q", v2.Digest, after, before)
	}
	if _, err := os.Stat(filepath.Join(cache, "m", v1.Digest, "model.safetensors")); err != nil {
		t.Fatalf("the loaded version's files: %v", err)
	}
	dir, digest, err := ms.Fetch(ctx, "m", t.TempDir())
	if err != nil || digest != v2.Digest || filepath.Base(dir) != v2.Digest {
		t.Fatalf("fetch after the push: %s %s %v", dir, digest, err)
	}
}

// serveGateway serves g on a free port until the test ends and returns its
// URL.
func serveGateway(t *testing.T, ctx context.Context, g *gateway.Gateway) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gctx, gstop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- g.Serve(gctx, ln) }()
	t.Cleanup(func() {
		gstop()
		if err := <-served; err != nil {
			t.Errorf("gateway: %v", err)
		}
	})
	return "http://" + ln.Addr().String()
}

// generate and score --model NAME: a value that is not a directory is a
// model of lf_models, fetched (as the infer role) into --model-cache/<name>/<digest>
// and reported under its name; with no NATS answering the error names both
// the missing directory and the URL; an unknown name is refused.
func TestGenerateScorePushedModel(t *testing.T) {
	tiny, e, _, ctx := tinyOnRoles(t)
	as := func(role string, args ...string) (string, error) { return runCLIAs(t, ctx, e, role, args...) }
	out, err := as("admin", "model", "push", "small", tiny)
	if err != nil {
		t.Fatalf("push: %v\n%s", err, out)
	}
	digest := strings.Fields(out)[2]
	cache := t.TempDir()
	out, err = as("infer", "generate", "--model", "small", "--model-cache", cache, "--prompt", "hello", "--max-tokens", "4", "--temperature", "0")
	if err != nil {
		t.Fatalf("generate --model small: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(cache, "small", digest, "model.safetensors")); err != nil {
		t.Fatalf("the fetched model is not in the cache: %v", err)
	}
	in := filepath.Join(t.TempDir(), "prompts.jsonl")
	if err := os.WriteFile(in, []byte(`{"prompt":"hi","max_tokens":2}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = as("infer", "generate", "--model", "small", "--model-cache", cache, "--input", in)
	if err != nil || !strings.Contains(out, `"model":"small"`) {
		t.Fatalf("generate --input reports the model as %q (%v), want small", out, err)
	}
	rows := filepath.Join(t.TempDir(), "rows.jsonl")
	if err := os.WriteFile(rows, []byte(`{"text":"hello world"}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	scores := filepath.Join(t.TempDir(), "scores.parquet")
	if out, err := as("infer", "score", "--model", "small", "--model-cache", cache, "--input", rows, "--output", scores); err != nil {
		t.Fatalf("score --model small: %v\n%s", err, out)
	}
	if _, err := os.Stat(scores); err != nil {
		t.Fatal(err)
	}
	if _, err := as("infer", "generate", "--model", "absent", "--model-cache", cache, "--prompt", "x"); err == nil || !strings.Contains(err.Error(), "not a directory") || !strings.Contains(err.Error(), "not in lf_models") {
		t.Fatalf("an unknown name: %v", err)
	}
	_, err = runCLI(t, ctx, "--nats=nats://127.0.0.1:1", "--wait-for-nats=0s", "--log-level=error", "generate", "--model", "small", "--model-cache", t.TempDir(), "--prompt", "x")
	if err == nil || !strings.Contains(err.Error(), "not a directory") || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("no NATS: %v", err)
	}
}

// tinyOnRoles is a tiny model's directory and a bus with the roles of
// deploy/nats-roles.conf (its server and admin connection), with a context
// for two minutes.
func tinyOnRoles(t *testing.T) (string, *pipeline.Embedded, *pipeline.Bus, context.Context) {
	t.Helper()
	tiny := filepath.Join(t.TempDir(), "tiny")
	if err := checkpoint.Init("tiny", 3, tiny); err != nil {
		t.Fatal(err)
	}
	e, admin := startRoles(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return tiny, e, admin, ctx
}
