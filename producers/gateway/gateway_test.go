package gateway_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/largeforge/largeforge/consumers/infer"
	"github.com/largeforge/largeforge/internal/promreg/promregtest"
	"github.com/largeforge/largeforge/internal/testenv"
	"github.com/largeforge/largeforge/logging"
	"github.com/largeforge/largeforge/model"
	"github.com/largeforge/largeforge/model/tokenizer"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/producers/gateway"
	"github.com/largeforge/largeforge/schemas"
	"github.com/largeforge/largeforge/serve"
	"github.com/largeforge/largeforge/storage/modelstore"
)

type stack struct {
	bus  *pipeline.Bus
	url  string // http://127.0.0.1:port
	reg  *prometheus.Registry
	m    *model.Model
	tok  *tokenizer.Tokenizer
	gen  *model.TextGenerator
	oai  openai.Client
	http *http.Client
	logs *logBuffer // the gateway's log lines, in the JSON log shape
}

// logBuffer collects the gateway's log lines.
type logBuffer struct{ pipelinetest.Buffer }

// find returns the log lines whose request_id is id.
func (b *logBuffer) find(t *testing.T, id string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(l), &rec) == nil && rec["request_id"] == id {
			out = append(out, rec)
		}
	}
	return out
}

// newStack starts a bus, an infer worker serving stories260K (with the
// ChatML chat_template, for chat requests) as "stories" and the gateway on
// a random port.
func newStack(t *testing.T, cfg gateway.Config) *stack {
	t.Helper()
	dir := filepath.Dir(testenv.SharedFile(t, "models/stories260K/model.safetensors"))
	dir = testenv.WithChatTemplate(t, dir, tokenizer.ChatMLJinja)
	_, bus := pipelinetest.StartBus(t)
	log := pipelinetest.Logger(t)
	m, tok, err := infer.Load("stories", dir, infer.Config{}, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	gen, err := model.NewTextGenerator(m, tok)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	ctx, cancel := context.WithCancel(context.Background())
	w, err := infer.Start(ctx, bus, []infer.ModelInput{{Name: "stories", Model: m, Tok: tok}},
		infer.Config{Slots: 4, HeartbeatEvery: time.Second, MaxWait: 100 * time.Millisecond}, log, reg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	logs := &logBuffer{}
	glog, err := logging.New(io.MultiWriter(logs, zerolog.NewTestWriter(t)), logging.FormatJSON, "info")
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	g, err := gateway.New(ctx, bus, cfg, glog, reg, reg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	addr := serveGateway(t, ctx, cancel, g, func() {
		if err := w.Wait(); err != nil {
			t.Errorf("workers: %v", err)
		}
	})
	s := &stack{bus: bus, url: "http://" + addr, reg: reg, m: m, tok: tok, gen: gen, http: &http.Client{Timeout: 30 * time.Second}, logs: logs}
	key := "unused"
	if len(cfg.APIKeys) > 0 {
		key = cfg.APIKeys[0]
	}
	s.oai = openai.NewClient(option.WithBaseURL(s.url+"/v1/"), option.WithAPIKey(key), option.WithMaxRetries(0))
	// The worker's heartbeat makes the model live.
	pipelinetest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		page, err := s.oai.Models.List(context.Background())
		if err != nil {
			return err
		}
		if len(page.Data) != 1 || page.Data[0].ID != "stories" {
			return fmt.Errorf("models %+v", page.Data)
		}
		return nil
	})
	return s
}

// direct runs a request on the model itself.
func (s *stack) direct(t *testing.T, c schemas.CompletionRequest) model.TextResult {
	t.Helper()
	tr, err := serve.TextRequest(s.tok, c, 0)
	if err != nil {
		t.Fatal(err)
	}
	out, err := s.gen.Generate(context.Background(), []model.TextRequest{tr})
	if err != nil {
		t.Fatal(err)
	}
	return out[0]
}

func TestOpenAIClient(t *testing.T) {
	s := newStack(t, gateway.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	prompt := "Once upon a time"
	want := s.direct(t, schemas.CompletionRequest{Prompt: prompt, MaxTokens: 24, Temperature: 0})
	chatMsgs := []schemas.ChatMessage{{Role: "user", Content: "Tell me a story"}}
	wantChat := s.direct(t, schemas.CompletionRequest{Messages: chatMsgs, MaxTokens: 16, Temperature: 0})
	if want.Text == "" || wantChat.Text == "" {
		t.Fatalf("direct output empty: %q %q", want.Text, wantChat.Text)
	}
	cparams := openai.CompletionNewParams{Model: "stories", Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String(prompt)},
		MaxTokens: openai.Int(24), Temperature: openai.Float(0)}
	chparams := openai.ChatCompletionNewParams{Model: "stories", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Tell me a story")},
		MaxTokens: openai.Int(16), Temperature: openai.Float(0)}

	t.Run("completion", func(t *testing.T) {
		c, err := s.oai.Completions.New(ctx, cparams)
		if err != nil {
			t.Fatal(err)
		}
		if len(c.Choices) != 1 || c.Choices[0].Text != want.Text || string(c.Choices[0].FinishReason) != want.FinishReason {
			t.Errorf("choices %+v, direct %q (%s)", c.Choices, want.Text, want.FinishReason)
		}
		if c.Usage.PromptTokens != int64(want.PromptTokens) || c.Usage.CompletionTokens != int64(want.CompletionTokens) || c.Object != "text_completion" {
			t.Errorf("usage %+v object %s, direct %d+%d", c.Usage, c.Object, want.PromptTokens, want.CompletionTokens)
		}
	})
	t.Run("completion stream", func(t *testing.T) {
		st := s.oai.Completions.NewStreaming(ctx, cparams)
		var text strings.Builder
		n, finish := 0, ""
		for st.Next() {
			c := st.Current()
			n++
			if len(c.Choices) > 0 {
				text.WriteString(c.Choices[0].Text)
				if c.Choices[0].FinishReason != "" {
					finish = string(c.Choices[0].FinishReason)
				}
			}
		}
		if err := st.Err(); err != nil {
			t.Fatal(err)
		}
		if text.String() != want.Text || finish != want.FinishReason || n < 3 {
			t.Errorf("streamed %q in %d chunks (%s), direct %q (%s)", text.String(), n, finish, want.Text, want.FinishReason)
		}
	})
	t.Run("chat", func(t *testing.T) {
		c, err := s.oai.Chat.Completions.New(ctx, chparams)
		if err != nil {
			t.Fatal(err)
		}
		if len(c.Choices) != 1 || c.Choices[0].Message.Content != wantChat.Text || c.Choices[0].Message.Role != "assistant" || c.Object != "chat.completion" {
			t.Errorf("chat %+v, direct %q", c, wantChat.Text)
		}
	})
	t.Run("chat stream", func(t *testing.T) {
		st := s.oai.Chat.Completions.NewStreaming(ctx, chparams)
		var acc openai.ChatCompletionAccumulator
		for st.Next() {
			acc.AddChunk(st.Current())
		}
		if err := st.Err(); err != nil {
			t.Fatal(err)
		}
		if len(acc.Choices) != 1 || acc.Choices[0].Message.Content != wantChat.Text {
			t.Errorf("accumulated %+v, direct %q", acc.Choices, wantChat.Text)
		}
	})

	errTests := []struct {
		name       string
		params     openai.CompletionNewParams
		wantStatus int
		wantMsg    string
		wantParam  string
	}{
		{name: "max_tokens 0", params: openai.CompletionNewParams{Model: "stories", Prompt: cparams.Prompt, MaxTokens: openai.Int(0)}, wantStatus: 400, wantMsg: "Invalid max_tokens", wantParam: "max_tokens"},
		{name: "max_tokens 5000", params: openai.CompletionNewParams{Model: "stories", Prompt: cparams.Prompt, MaxTokens: openai.Int(5000)}, wantStatus: 400, wantMsg: "Invalid max_tokens", wantParam: "max_tokens"},
		{name: "temperature", params: openai.CompletionNewParams{Model: "stories", Prompt: cparams.Prompt, Temperature: openai.Float(2.5)}, wantStatus: 400, wantMsg: "Temperature out of range", wantParam: "temperature"},
		{name: "model path", params: openai.CompletionNewParams{Model: "../x", Prompt: cparams.Prompt}, wantStatus: 400, wantMsg: "Invalid model path", wantParam: "model"},
		{name: "unknown model", params: openai.CompletionNewParams{Model: "nope", Prompt: cparams.Prompt}, wantStatus: 404, wantMsg: "The model `nope` does not exist or you do not have access to it.", wantParam: ""}, // OpenAI: param null
		{name: "too long for the model", params: openai.CompletionNewParams{Model: "stories", Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String(strings.Repeat("dog ", 5000))}, MaxTokens: openai.Int(4)}, wantStatus: 400, wantMsg: "context", wantParam: "prompt"},
		{name: "beyond the model's context", params: openai.CompletionNewParams{Model: "stories", Prompt: cparams.Prompt, MaxTokens: openai.Int(4000)}, wantStatus: 400, wantMsg: "Invalid max_tokens: 4000 is over the limit of ", wantParam: "max_tokens"},
	}
	for _, tc := range errTests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.oai.Completions.New(ctx, tc.params)
			var apiErr *openai.Error
			if !errors.As(err, &apiErr) {
				t.Fatalf("err %v, want an API error", err)
			}
			if apiErr.StatusCode != tc.wantStatus || !strings.Contains(apiErr.Message, tc.wantMsg) || apiErr.Param != tc.wantParam {
				t.Errorf("got %d %q param %q, want %d %q param %q", apiErr.StatusCode, apiErr.Message, apiErr.Param, tc.wantStatus, tc.wantMsg, tc.wantParam)
			}
		})
	}
}

func (s *stack) post(t *testing.T, ctx context.Context, path, body string, hdr map[string]string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := s.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func TestHTTPDetails(t *testing.T) {
	s := newStack(t, gateway.Config{WorkerWait: 300 * time.Millisecond, MaxBodyBytes: 4096})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	t.Run("request id", func(t *testing.T) {
		resp := s.post(t, ctx, "/v1/completions", `{"model":"stories","prompt":"Hi","max_tokens":2}`,
			map[string]string{"X-Request-Id": "req-abc", "Traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
		defer resp.Body.Close()
		var body schemas.CompletionResponse
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 || resp.Header.Get("X-Request-Id") != "req-abc" || body.ID != "cmpl-req-abc" {
			t.Errorf("status %d, x-request-id %q, id %q", resp.StatusCode, resp.Header.Get("X-Request-Id"), body.ID)
		}
		// "Request completed" in the log shape, with the tokens generated.
		var done map[string]any
		pipelinetest.CheckFor(t, time.Minute, 10*time.Millisecond, func() error {
			for _, rec := range s.logs.find(t, "req-abc") {
				if rec["message"] == "Request completed" {
					done = rec
					return nil
				}
			}
			return errors.New("no Request completed line for req-abc")
		})
		c, _ := done["context"].(map[string]any)
		if done["level"] != "INFO" || done["logger"] == nil || c["model"] != "stories" || c["tokens_generated"] != float64(body.Usage.CompletionTokens) || body.Usage.CompletionTokens == 0 {
			t.Errorf("Request completed line %v, want tokens_generated %d", done, body.Usage.CompletionTokens)
		}
		resp2 := s.post(t, ctx, "/v1/completions", `{"model":"stories","prompt":"Hi","max_tokens":2}`, nil)
		resp2.Body.Close()
		if !strings.HasPrefix(resp2.Header.Get("X-Request-Id"), "req-") {
			t.Errorf("generated x-request-id %q", resp2.Header.Get("X-Request-Id"))
		}
	})
	t.Run("body limit", func(t *testing.T) {
		resp := s.post(t, ctx, "/v1/completions", `{"model":"stories","prompt":"`+strings.Repeat("x", 5000)+`"}`, nil)
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Errorf("status %d, want 413", resp.StatusCode)
		}
	})
	t.Run("bad json", func(t *testing.T) {
		resp := s.post(t, ctx, "/v1/chat/completions", `{"model":`, nil)
		defer resp.Body.Close()
		var e struct {
			Error struct{ Message, Type string } `json:"error"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&e)
		if resp.StatusCode != 400 || e.Error.Type != "invalid_request_error" || e.Error.Message == "" {
			t.Errorf("status %d, error %+v", resp.StatusCode, e)
		}
	})
	t.Run("client disconnect cancels", func(t *testing.T) {
		cctx, ccancel := context.WithCancel(ctx)
		resp := s.post(t, cctx, "/v1/completions", `{"model":"stories","prompt":"Once upon a time","max_tokens":2000,"temperature":0,"stream":true}`, nil)
		r := bufio.NewReader(resp.Body)
		line, err := r.ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "data: {") {
			t.Fatalf("first line %q, %v", line, err)
		}
		ccancel()
		resp.Body.Close()
		pipelinetest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
			if v := promregtest.Value(t, s.reg, "inference_requests_total", "status", "cancelled"); v < 1 {
				return fmt.Errorf("cancelled %v", v)
			}
			return nil
		})
	})
	t.Run("no live worker", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{}`), 0o644); err != nil {
			t.Fatal(err)
		}
		ms, err := modelstore.New(ctx, s.bus)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ms.Push(ctx, "sleepy", dir); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, err = s.oai.Completions.New(ctx, openai.CompletionNewParams{Model: "sleepy", Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("x")}},
			option.WithHeader("X-Request-Id", "req-sleepy"))
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != 503 {
			t.Fatalf("err %v, want 503", err)
		}
		// A 5xx is logged at ERROR.
		pipelinetest.CheckFor(t, time.Minute, 10*time.Millisecond, func() error {
			for _, rec := range s.logs.find(t, "req-sleepy") {
				if rec["message"] == "Request completed" {
					if rec["level"] != "ERROR" {
						return fmt.Errorf("503 logged at %v", rec["level"])
					}
					return nil
				}
			}
			return errors.New("no Request completed line for req-sleepy")
		})
		if el := time.Since(start); el < 300*time.Millisecond { // a lower bound holds on any machine
			t.Errorf("503 after %v, want after the 300ms wait", el)
		}
	})
	t.Run("health", func(t *testing.T) {
		resp, err := s.http.Get(s.url + "/health")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var h schemas.HealthResponse
		if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, c := range h.Components {
			got[c.Name] = c.Status
		}
		// sleepy is stored but has no worker: degraded.
		if resp.StatusCode != 200 || h.Status != schemas.StatusDegraded || got["bus"] != "healthy" || got["model:stories"] != "healthy" || got["model:sleepy"] != "unhealthy" {
			t.Errorf("health %d %+v", resp.StatusCode, h)
		}
	})
	t.Run("metrics", func(t *testing.T) {
		resp, err := s.http.Get(s.url + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		for _, want := range []string{`gateway_requests_total{code="200",path="/v1/completions"}`, `gateway_requests_total{code="503",path="/v1/completions"}`, "inference_requests_total"} {
			if !strings.Contains(string(b), want) {
				t.Errorf("metrics lack %s", want)
			}
		}
	})
}

func TestTraceID(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{name: "valid", in: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", want: "4bf92f3577b34da6a3ce929d0e0e4736"},
		{name: "empty", in: ""},
		{name: "short", in: "00-4bf92f35-00f067aa0ba902b7-01"},
		{name: "zero", in: "00-00000000000000000000000000000000-00f067aa0ba902b7-01"},
		{name: "not hex", in: "00-4bf92f3577b34da6a3ce929d0e0e47zz-00f067aa0ba902b7-01"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := gateway.TraceID(tc.in); got != tc.want {
				t.Errorf("TraceID(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     gateway.Config
		wantErr bool
	}{
		{name: "zero", cfg: gateway.Config{}},
		{name: "negative body", cfg: gateway.Config{MaxBodyBytes: -1}, wantErr: true},
		{name: "negative wait", cfg: gateway.Config{WorkerWait: -time.Second}, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if (err != nil) != tc.wantErr || (err != nil && !errors.Is(err, gateway.ErrInvalidOption)) {
				t.Errorf("Validate() = %v, wantErr %v", err, tc.wantErr)
			}
		})
	}
}

func FuzzTraceID(f *testing.F) {
	for _, s := range []string{"", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "00-x-y-z", "----", "ff-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01-extra"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got := gateway.TraceID(in)
		if got == "" {
			return
		}
		if len(got) != 32 || strings.Trim(got, "0123456789abcdef") != "" || got == strings.Repeat("0", 32) {
			t.Errorf("TraceID(%q) = %q: not 32 lower hex digits", in, got)
		}
	})
}

func TestAPIKeys(t *testing.T) {
	s := newStack(t, gateway.Config{APIKeys: []string{"sk-first-key", "sk-second-key"}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	params := openai.CompletionNewParams{Model: "stories", Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("Hi")}, MaxTokens: openai.Int(2)}
	tests := []struct {
		name       string
		key        string
		wantStatus int
	}{
		{name: "first key", key: "sk-first-key", wantStatus: 200},
		{name: "second key", key: "sk-second-key", wantStatus: 200},
		{name: "wrong key", key: "sk-first-kez", wantStatus: 401},
		{name: "prefix of a key", key: "sk-first", wantStatus: 401},
		{name: "no key", key: "", wantStatus: 401},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := openai.NewClient(option.WithBaseURL(s.url+"/v1/"), option.WithAPIKey(tc.key), option.WithMaxRetries(0))
			_, err := c.Completions.New(ctx, params)
			status := 200
			var apiErr *openai.Error
			if errors.As(err, &apiErr) {
				status = apiErr.StatusCode
				if apiErr.Message != "Invalid API key" {
					t.Errorf("message %q", apiErr.Message)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if status != tc.wantStatus {
				t.Errorf("status %d, want %d", status, tc.wantStatus)
			}
		})
	}
	// The scheme is matched case-insensitively (RFC 9110 §11.1).
	for _, auth := range []string{"bearer sk-first-key", "BEARER sk-second-key", "Bearer  sk-first-key"} {
		resp := s.post(t, ctx, "/v1/completions", `{"model":"stories","prompt":"Hi","max_tokens":1}`, map[string]string{"Authorization": auth})
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("Authorization %q: status %d", auth, resp.StatusCode)
		}
	}
	for _, auth := range []string{"Basic sk-first-key", "sk-first-key", "Bearersk-first-key"} {
		resp := s.post(t, ctx, "/v1/completions", `{"model":"stories","prompt":"Hi","max_tokens":1}`, map[string]string{"Authorization": auth})
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Errorf("Authorization %q: status %d, want 401", auth, resp.StatusCode)
		}
	}
	resp, err := s.http.Get(s.url + "/health")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("/health without a key: %d", resp.StatusCode)
	}
	if err := (gateway.Config{APIKeys: []string{"short"}}).Validate(); !errors.Is(err, gateway.ErrInvalidOption) {
		t.Errorf("short key: %v", err)
	}
}
