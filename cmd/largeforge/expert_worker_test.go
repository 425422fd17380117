package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/largeforge/largeforge/internal/testenv"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/producers/gateway"
	"github.com/largeforge/largeforge/routing"
	"github.com/largeforge/largeforge/schemas"
)

// waitLive waits until a worker's heartbeat in lf_workers names model.
func waitLive(t *testing.T, bus *pipeline.Bus, model string, timeout time.Duration) {
	t.Helper()
	wkv, err := bus.KV(context.Background(), pipeline.BucketWorkers)
	if err != nil {
		t.Fatal(err)
	}
	pipelinetest.CheckFor(t, timeout, 100*time.Millisecond, func() error {
		live, err := routing.LiveWorkers(context.Background(), wkv)
		if err != nil {
			return err
		}
		if live[model] == 0 {
			return fmt.Errorf("%s not live: %v", model, live)
		}
		return nil
	})
}

// errorAnswer is the body of an OpenAI error answer.
type errorAnswer struct {
	Error struct {
		Message string `json:"message"`
		Param   string `json:"param"`
	} `json:"error"`
}

// completion posts a completion request and returns the status and the
// decoded body (a response, or an OpenAI error object).
func completion(t *testing.T, url string, body map[string]any) (int, schemas.CompletionResponse, errorAnswer) {
	t.Helper()
	data, _ := json.Marshal(body)
	resp, err := http.Post(url+"/v1/completions", "application/json", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var ok schemas.CompletionResponse
	var bad errorAnswer
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(raw, &ok); err != nil {
			t.Fatalf("response %s: %v", raw, err)
		}
	} else if err := json.Unmarshal(raw, &bad); err != nil {
		t.Fatalf("error %d %s: %v", resp.StatusCode, raw, err)
	}
	return resp.StatusCode, ok, bad
}

// TestWorkerExpertAsInferRole runs `largeforge worker --expert small` with
// the infer credential of deploy/nats-roles.conf: it reads the expert's
// lf_experts record (model_path a stories260K directory, max_tokens 64),
// serves it under its name, and its worker refuses a prompt plus max_tokens
// over 64 with "Invalid max_tokens" and the limit the prompt leaves.
func TestWorkerExpertAsInferRole(t *testing.T) {
	dir := filepath.Dir(testenv.SharedFile(t, "models/stories260K/model.safetensors"))
	e, admin := startRoles(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	expert := schemas.ExpertConfig{Name: "small", ModelPath: dir, MaxTokens: 64, Priority: 1}
	rec, _ := json.Marshal(expert)
	ekv, err := admin.KV(ctx, pipeline.BucketExperts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ekv.Put(ctx, "small", rec); err != nil {
		t.Fatal(err)
	}

	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := runCLI(t, wctx, "--nats="+e.ClientURL(), "--nats-user=infer", "--nats-password=infer-secret", "--log-level=error",
			"worker", "--expert", "small")
		done <- err
	}()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("worker --expert: %v", err)
		}
	})
	waitLive(t, admin, "small", 30*time.Second)

	reg := prometheus.NewRegistry()
	g, err := gateway.New(ctx, admin, gateway.Config{}, pipelinetest.Logger(t), reg, reg)
	if err != nil {
		t.Fatal(err)
	}
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
	url := "http://" + ln.Addr().String()

	status, resp, _ := completion(t, url, map[string]any{"model": "small", "prompt": "Once upon a time", "max_tokens": 8, "temperature": 0})
	if status != http.StatusOK || resp.Model != "small" || len(resp.Choices) != 1 || resp.Usage.CompletionTokens == 0 {
		t.Fatalf("completion from the expert: %d %+v", status, resp)
	}
	// 50 passes the gateway (it leaves room for a prompt); the worker
	// counts the prompt's tokens: with them, 50 is over the context of 64.
	prompt := strings.Repeat("Once upon a time there was a little dog. ", 2)
	status, _, bad := completion(t, url, map[string]any{"model": "small", "prompt": prompt, "max_tokens": 50})
	if status != http.StatusBadRequest || bad.Error.Param != "max_tokens" ||
		!strings.HasPrefix(bad.Error.Message, "Invalid max_tokens: 50 is over the limit of ") || !strings.Contains(bad.Error.Message, "64") {
		t.Fatalf("prompt plus max_tokens over the expert's context: %d %+v", status, bad)
	}
}
