package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/largeforge/largeforge/consumers/infer"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/producers/gateway"
	"github.com/largeforge/largeforge/routing"
	"github.com/largeforge/largeforge/schemas"
)

// post sends a JSON body and returns the status and body.
func post(t *testing.T, url string, body any) (int, []byte) {
	t.Helper()
	data, _ := json.Marshal(body)
	resp, err := http.Post(url, "application/json", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

// TestExpertEndpoint serves the expert "remote" through a proxy worker on
// one bus whose endpoint is a second, real gateway (on another bus) serving
// stories260K as "stories": completions, streamed or not, come from the
// second gateway's model; the expert's max_tokens is its context; an expert
// whose endpoint is unreachable is not live.
func TestExpertEndpoint(t *testing.T) {
	remote := newStack(t, gateway.Config{})
	experts := []schemas.ExpertConfig{
		{Name: "remote", ModelPath: "stories", Endpoint: remote.url + "/v1", MaxTokens: 64, Keywords: []string{"story"}},
		{Name: "dead", ModelPath: "m", Endpoint: "http://127.0.0.1:1", MaxTokens: 2048},
	}
	local := newStack(t, gateway.Config{Experts: experts})
	ctx, cancel := context.WithCancel(context.Background())
	var ws []*infer.Workers
	for _, e := range experts {
		w, err := infer.StartProxy(ctx, local.bus, e, 30*time.Second, infer.Config{HeartbeatEvery: time.Second, WorkerID: "proxy-" + e.Name, MaxWait: 100 * time.Millisecond},
			pipelinetest.Logger(t), nil)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		ws = append(ws, w)
	}
	t.Cleanup(func() {
		cancel()
		for _, w := range ws {
			if err := w.Wait(); err != nil {
				t.Errorf("proxy: %v", err)
			}
		}
	})
	wkv, err := local.bus.KV(ctx, pipeline.BucketWorkers)
	if err != nil {
		t.Fatal(err)
	}
	pipelinetest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		live, err := routing.LiveWorkers(ctx, wkv)
		if err != nil {
			return err
		}
		if live["remote"] != 1 {
			return fmt.Errorf("remote not live: %v", live)
		}
		return nil
	})

	prompt := "Once upon a time"
	want := remote.direct(t, schemas.CompletionRequest{Prompt: prompt, MaxTokens: 16, Temperature: 0})
	status, body := post(t, local.url+"/v1/completions", map[string]any{"model": "remote", "prompt": prompt, "max_tokens": 16, "temperature": 0})
	if status != http.StatusOK {
		t.Fatalf("completion through the endpoint: %d %s", status, body)
	}
	var resp schemas.CompletionResponse
	if err := json.Unmarshal(body, &resp); err != nil {
		t.Fatal(err)
	}
	if resp.Model != "remote" || len(resp.Choices) != 1 || resp.Choices[0].Text != want.Text || resp.Usage.CompletionTokens == 0 {
		t.Fatalf("response %+v, want text %q from the remote model", resp, want.Text)
	}

	// Streamed: "auto" routes the story prompt to remote; the chunks come
	// from the endpoint's stream.
	data, _ := json.Marshal(map[string]any{"model": "auto", "prompt": prompt + " story", "max_tokens": 16, "temperature": 0, "stream": true})
	hr, err := http.Post(local.url+"/v1/completions", "application/json", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	defer hr.Body.Close()
	if hr.StatusCode != http.StatusOK || hr.Header.Get("X-Largeforge-Expert") != "remote" {
		t.Fatalf("stream: %d, expert %q", hr.StatusCode, hr.Header.Get("X-Largeforge-Expert"))
	}
	wantStream := remote.direct(t, schemas.CompletionRequest{Prompt: prompt + " story", MaxTokens: 16, Temperature: 0})
	var text strings.Builder
	chunks := 0
	sc := bufio.NewScanner(hr.Body)
	for sc.Scan() {
		d, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok || d == "[DONE]" {
			continue
		}
		var ch struct {
			Choices []struct {
				Text string `json:"text"`
			} `json:"choices"`
		}
		if err := json.Unmarshal([]byte(d), &ch); err != nil {
			t.Fatalf("chunk %q: %v", d, err)
		}
		for _, c := range ch.Choices {
			text.WriteString(c.Text)
		}
		chunks++
	}
	if text.String() != wantStream.Text || chunks < 2 {
		t.Fatalf("streamed %q in %d chunks, want %q", text.String(), chunks, wantStream.Text)
	}

	// max_tokens is the expert's context: 64 leaves at most 63 for the completion.
	status, body = post(t, local.url+"/v1/completions", map[string]any{"model": "remote", "prompt": prompt, "max_tokens": 64})
	var e struct {
		Error struct {
			Message string `json:"message"`
			Param   string `json:"param"`
		} `json:"error"`
	}
	_ = json.Unmarshal(body, &e)
	if status != http.StatusBadRequest || !strings.HasPrefix(e.Error.Message, "Invalid max_tokens") || e.Error.Param != "max_tokens" || !strings.Contains(e.Error.Message, "63") {
		t.Fatalf("max_tokens over the expert's context: %d %s", status, body)
	}

	// The unreachable endpoint's expert is not live: 503, unhealthy.
	status, body = post(t, local.url+"/v1/completions", map[string]any{"model": "dead", "prompt": prompt, "max_tokens": 4})
	if status != http.StatusServiceUnavailable {
		t.Fatalf("dead expert: %d %s", status, body)
	}
	hresp, err := http.Get(local.url + "/health")
	if err != nil {
		t.Fatal(err)
	}
	defer hresp.Body.Close()
	var h schemas.HealthResponse
	if err := json.NewDecoder(hresp.Body).Decode(&h); err != nil {
		t.Fatal(err)
	}
	for _, c := range h.Components {
		if c.Name == "model:dead" && c.Status != schemas.StatusUnhealthy {
			t.Fatalf("dead expert's health %+v", c)
		}
	}
}
