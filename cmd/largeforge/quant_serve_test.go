package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/largeforge/largeforge/model/checkpoint"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/producers/gateway"
	"github.com/largeforge/largeforge/schemas"
)

// TestQuantizedServedEndToEnd: a directory made by model quantize --bits 4
// (tiny, GPTQ int4 in groups of 32) is served by an infer worker on the
// infer credential; a batch job (submit role) and a chat completion
// through the gateway (api role) answer for it with exactly what generate
// computes on the same directory, and differently from the float model it
// came from (so the quantized weights, not a float copy, served them).
func TestQuantizedServedEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("serves a quantized model through the worker, a batch job and the gateway")
	}
	base, e, admin, ctx := tinyOnRoles(t)
	log := pipelinetest.Logger(t)
	if err := checkpoint.SetChatTemplate(base, "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"); err != nil {
		t.Fatal(err)
	}
	q4 := filepath.Join(t.TempDir(), "q4")
	if out, err := runCLI(t, ctx, "model", "quantize", "--bits", "4", base, q4); err != nil {
		t.Fatalf("quantize: %v\n%s", err, out)
	}
	if q, err := checkpoint.IsQuantized(q4); err != nil || !q {
		t.Fatalf("model quantize wrote no quantized directory (%v)", err)
	}
	must := mustAs(t, ctx, e)
	startResultsSinkAs(t, ctx, e, log)
	wctx, wstop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := runCLIAs(t, wctx, e, "infer", "worker", "--worker-id", "q4", "--slots", "4", "--model", "q4="+q4, "--model", "float="+base)
		done <- err
	}()
	t.Cleanup(func() {
		wstop()
		if err := <-done; err != nil {
			t.Errorf("infer worker: %v", err)
		}
	})
	waitLive(t, admin, "q4", time.Minute)

	// generate on the directory: the reference for both paths.
	prompts := []string{"Once upon a time", "Colour 3?"}
	const chatContent = "Colour 3?"
	var lines []string
	for _, p := range prompts {
		b, _ := json.Marshal(map[string]any{"prompt": p, "max_tokens": 12, "temperature": 0})
		lines = append(lines, string(b))
	}
	b, _ := json.Marshal(map[string]any{"messages": []map[string]string{{"role": "user", "content": chatContent}}, "max_tokens": 12, "temperature": 0})
	lines = append(lines, string(b))
	in, out := filepath.Join(t.TempDir(), "in.jsonl"), filepath.Join(t.TempDir(), "out.jsonl")
	if err := os.WriteFile(in, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := runCLI(t, ctx, "--log-level", "error", "generate", "--model", q4, "--input", in, "--output", out); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for i, l := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		var r schemas.CompletionResponse
		if err := json.Unmarshal([]byte(l), &r); err != nil || len(r.Choices) != 1 {
			t.Fatalf("generate line %d: %s (%v)", i+1, l, err)
		}
		if i < len(prompts) {
			want = append(want, r.Choices[0].Text)
		} else if r.Choices[0].Message == nil {
			t.Fatalf("generate chat line: %s", l)
		} else {
			want = append(want, r.Choices[0].Message.Content)
		}
	}

	// A batch job for the quantized model, and one for its float source.
	texts := map[string]string{}
	for _, m := range []string{"q4", "float"} {
		var rows []string
		for i, p := range prompts {
			b, _ := json.Marshal(map[string]any{"custom_id": m + string(rune('0'+i)), "prompt": p, "max_tokens": 12, "temperature": 0})
			rows = append(rows, string(b))
		}
		for _, l := range batchJob(t, must, strings.Join(rows, "\n"), "--model", m) {
			var r schemas.CompletionResponse
			if l.Response == nil || l.Response.StatusCode != 200 || json.Unmarshal(l.Response.Body, &r) != nil || len(r.Choices) != 1 {
				t.Fatalf("row %s: %+v %+v", l.CustomID, l.Response, l.Error)
			}
			texts[l.CustomID] = r.Choices[0].Text
		}
	}
	differs := false
	for i := range prompts {
		id := string(rune('0' + i))
		if texts["q4"+id] != want[i] {
			t.Errorf("batch row q4%s: %q, generate on the directory %q", id, texts["q4"+id], want[i])
		}
		differs = differs || texts["float"+id] != texts["q4"+id]
	}
	if !differs {
		t.Errorf("int4 answered as float on every prompt (%v): the quantized weights were not served", texts)
	}

	// The gateway's chat completion for the quantized model.
	reg := prometheus.NewRegistry()
	g, err := gateway.New(ctx, pipelinetest.ConnectRole(t, e, "api", log), gateway.Config{}, log, reg, reg)
	if err != nil {
		t.Fatal(err)
	}
	url := serveGateway(t, ctx, g)
	var r struct {
		Model   string
		Choices []struct{ Message struct{ Content string } }
	}
	body := map[string]any{"model": "q4", "messages": []map[string]string{{"role": "user", "content": chatContent}}, "max_tokens": 12, "temperature": 0}
	if status := postJSON(t, url+"/v1/chat/completions", body, &r); status != 200 || len(r.Choices) != 1 {
		t.Fatalf("chat completion: %d %+v", status, r)
	}
	if r.Model != "q4" || r.Choices[0].Message.Content != want[len(prompts)] {
		t.Errorf("gateway chat: %s %q, generate on the directory %q", r.Model, r.Choices[0].Message.Content, want[len(prompts)])
	}
}

// mustAs is runCLIAs that fails t on an error.
func mustAs(t *testing.T, ctx context.Context, e *pipeline.Embedded) func(role string, args ...string) string {
	return func(role string, args ...string) string {
		t.Helper()
		out, err := runCLIAs(t, ctx, e, role, args...)
		if err != nil {
			t.Fatalf("largeforge %s as %s: %v\n%s", strings.Join(args, " "), role, err, out)
		}
		return out
	}
}

// startResultsSinkAs runs a results sink on the results credential until
// the test ends.
func startResultsSinkAs(t *testing.T, ctx context.Context, e *pipeline.Embedded, log zerolog.Logger) {
	t.Helper()
	sinkCtx, sinkStop := context.WithCancel(ctx)
	sink, err := startWorkers(sinkCtx, pipelinetest.ConnectRole(t, e, "results", log), WorkerConfig{DataDir: t.TempDir()}, []string{RoleResults}, log, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sinkStop(); _ = sink.Wait() })
}
