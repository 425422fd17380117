package infer_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/largeforge/largeforge/consumers/infer"
	"github.com/largeforge/largeforge/internal/promreg/promregtest"
	"github.com/largeforge/largeforge/model"
	"github.com/largeforge/largeforge/model/tokenizer"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/schemas"
)

func TestRPCCompletion(t *testing.T) {
	s := newStack(t)
	s.worker(t, 4)
	m, tok := stories(t)
	gen, err := model.NewTextGenerator(m, tok)
	if err != nil {
		t.Fatal(err)
	}
	direct, err := gen.Generate(context.Background(), []model.TextRequest{{Prompt: "Once upon a time", Params: model.SamplingParams{MaxTokens: 20}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	tests := []struct {
		name      string
		body      string
		wantErr   string // in the error body's message
		wantParam string
	}{
		{name: "stream", body: `{"model":"stories","prompt":"Once upon a time","max_tokens":20,"temperature":0,"stream":true}`},
		{name: "whole", body: `{"model":"stories","prompt":"Once upon a time","max_tokens":20,"temperature":0}`},
		{name: "bad max_tokens", body: `{"model":"stories","prompt":"x","max_tokens":0}`, wantErr: "Invalid max_tokens"},
		{name: "too long", body: `{"model":"stories","prompt":"` + strings.Repeat("dog ", 5000) + `","max_tokens":4}`, wantErr: "context", wantParam: "prompt"},
		{name: "chat without a chat_template", body: `{"model":"stories","messages":[{"role":"user","content":"Hi"}],"max_tokens":5}`,
			wantErr: tokenizer.ErrNoChatTemplate.Error()},
		{name: "max_tokens beyond the context", body: `{"model":"stories","prompt":"Once upon a time","max_tokens":4000}`,
			wantErr: "Invalid max_tokens: 4000 is over the limit of ", wantParam: "max_tokens"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var chunks []string
			started := false
			final, err := s.bus.StreamRPC(ctx, pipeline.RPCCall{Subject: pipeline.RPCSubject("stories"), Data: []byte(tc.body), RequestID: "req-1"},
				func() { started = true }, func(b []byte) error { chunks = append(chunks, string(b)); return nil })
			if !started {
				t.Error("no start message")
			}
			if tc.wantErr != "" {
				var f *pipeline.RPCFailure
				if !errors.As(err, &f) {
					t.Fatalf("err %v, want an RPCFailure", err)
				}
				var eb schemas.RPCErrorBody
				if err := json.Unmarshal(f.Body, &eb); err != nil {
					t.Fatal(err)
				}
				if eb.Status != 400 || !strings.Contains(eb.Message, tc.wantErr) || eb.Param != tc.wantParam {
					t.Errorf("error body %+v, want 400 with %q and param %q", eb, tc.wantErr, tc.wantParam)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var resp schemas.CompletionResponse
			if err := json.Unmarshal(final, &resp); err != nil {
				t.Fatal(err)
			}
			if got := resp.Choices[0].Text; got != direct[0].Text {
				t.Errorf("text %q, direct %q", got, direct[0].Text)
			}
			if resp.Usage.CompletionTokens != direct[0].CompletionTokens || resp.Choices[0].FinishReason != direct[0].FinishReason {
				t.Errorf("usage %+v finish %s, direct %+v", resp.Usage, resp.Choices[0].FinishReason, direct[0])
			}
			if strings.Contains(tc.body, `"stream":true`) {
				if len(chunks) < 2 || strings.Join(chunks, "") != direct[0].Text {
					t.Errorf("chunks %q, want pieces of %q", chunks, direct[0].Text)
				}
			} else if len(chunks) != 0 {
				t.Errorf("chunks %q without stream", chunks)
			}
		})
	}

	t.Run("cancel", func(t *testing.T) {
		cctx, ccancel := context.WithCancel(ctx)
		n := 0
		_, err := s.bus.StreamRPC(cctx, pipeline.RPCCall{Subject: pipeline.RPCSubject("stories"),
			Data: []byte(`{"model":"stories","prompt":"Once upon a time","max_tokens":2000,"temperature":0,"stream":true}`)},
			nil, func([]byte) error {
				if n++; n == 3 {
					ccancel()
				}
				return nil
			})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err %v", err)
		}
		// The worker stops generating: its cancelled counter moves.
		checkCounter(t, s, "cancelled")
	})

	t.Run("no responders", func(t *testing.T) {
		_, err := s.bus.StreamRPC(ctx, pipeline.RPCCall{Subject: pipeline.RPCSubject("nobody"), Data: []byte(`{}`)}, nil, nil)
		if !errors.Is(err, pipeline.ErrNoResponders) {
			t.Fatalf("err %v, want ErrNoResponders", err)
		}
	})
	t.Run("metrics", func(t *testing.T) {
		// Only interactive requests ran here: they set tokens_per_second.
		if v := promregtest.Value(t, s.reg, "tokens_per_second", "model", "stories"); !(v > 0) {
			t.Errorf("tokens_per_second{model=stories} = %v after interactive requests", v)
		}
		// The model's weights (stories260K: 260k float32 parameters) and its
		// batcher's KV cache.
		if v := promregtest.Value(t, s.reg, schemas.MetricGPUMemoryUsedBytes, schemas.LabelDevice, infer.MemoryDevice); v < 4*260_000 {
			t.Errorf("gpu_memory_used_bytes{device=cpu} = %v", v)
		}
	})
}

func checkCounter(t *testing.T, s *stack, status string) {
	t.Helper()
	pipelinetest.CheckFor(t, time.Minute, 50*time.Millisecond, func() error {
		if promregtest.Value(t, s.reg, "inference_requests_total", "status", status) == 0 {
			return fmt.Errorf("no inference_requests_total{status=%q}", status)
		}
		return nil
	})
}
