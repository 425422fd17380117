package schemas

import (
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
)

func int64p(v int64) *int64 { return &v }

func TestDecodeCompletionRequest(t *testing.T) {
	def := DefaultCompletionRequest()
	with := func(f func(r *CompletionRequest)) *CompletionRequest {
		r := def
		r.Model, r.Prompt = "m", "p"
		f(&r)
		return &r
	}
	tests := []struct {
		name    string
		in      string
		want    *CompletionRequest
		wantErr bool
	}{
		{name: "defaults", in: `{"model":"m","prompt":"p"}`, want: with(func(*CompletionRequest) {})},
		{name: "explicit zero temperature stays", in: `{"model":"m","prompt":"p","temperature":0,"top_k":0}`,
			want: with(func(r *CompletionRequest) { r.Temperature, r.TopK = 0, 0 })},
		{name: "null means default", in: `{"model":"m","prompt":"p","temperature":null,"max_tokens":null,"stop":null}`,
			want: with(func(*CompletionRequest) {})},
		{name: "all fields", in: `{"model":"m","prompt":"p","max_tokens":10,"temperature":1.5,"top_p":0.5,"top_k":5,"stop":["\n","END"],"stream":true,"seed":42}`,
			want: with(func(r *CompletionRequest) {
				r.MaxTokens, r.Temperature, r.TopP, r.TopK, r.Stop, r.Stream, r.Seed = 10, 1.5, 0.5, 5, []string{"\n", "END"}, true, int64p(42)
			})},
		{name: "stop string", in: `{"model":"m","prompt":"p","stop":"###"}`, want: with(func(r *CompletionRequest) { r.Stop = []string{"###"} })},
		{name: "unknown keys ignored", in: `{"model":"m","prompt":"p","n":1,"user":"u","logit_bias":{}}`, want: with(func(*CompletionRequest) {})},
		{name: "keys case-sensitive", in: `{"model":"m","prompt":"p","Temperature":0}`, want: with(func(*CompletionRequest) {})},
		{name: "chat", in: `{"model":"m","messages":[{"role":"system","content":"s"},{"role":"user","content":"u","name":"x"}]}`,
			want: func() *CompletionRequest {
				r := def
				r.Model, r.Messages = "m", []ChatMessage{{"system", "s"}, {"user", "u"}}
				return &r
			}()},
		{name: "stop wrong type", in: `{"model":"m","prompt":"p","stop":[1]}`, wantErr: true},
		{name: "max_tokens string", in: `{"model":"m","prompt":"p","max_tokens":"10"}`, wantErr: true},
		{name: "max_tokens fraction", in: `{"model":"m","prompt":"p","max_tokens":1.5}`, wantErr: true},
		{name: "messages not list", in: `{"model":"m","messages":{"role":"user"}}`, wantErr: true},
		{name: "message null", in: `{"model":"m","messages":[null]}`, wantErr: true},
		{name: "array", in: `[{"model":"m"}]`, wantErr: true},
		{name: "truncated", in: `{"model":"m"`, wantErr: true},
		{name: "bad utf8", in: "{\"model\":\"m\xff\"}", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeCompletionRequest([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("DecodeCompletionRequest() error = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil {
				if !errors.Is(err, ErrInvalidRequest) {
					t.Fatalf("error %v does not wrap ErrInvalidRequest", err)
				}
				return
			}
			if !reflect.DeepEqual(got, *tt.want) {
				t.Fatalf("got %+v\nwant %+v", got, *tt.want)
			}
		})
	}
}

func TestCompletionRequestValidate(t *testing.T) {
	ok := func(f func(r *CompletionRequest)) CompletionRequest {
		r := DefaultCompletionRequest()
		r.Model, r.Prompt = "largeforge-7b", "Hello"
		f(&r)
		return r
	}
	tests := []struct {
		name     string
		req      CompletionRequest
		wantErr  error
		wantText string
	}{
		{name: "valid", req: ok(func(*CompletionRequest) {})},
		{name: "empty model", req: ok(func(r *CompletionRequest) { r.Model = "" }), wantErr: ErrModelNameRequired, wantText: "Model name required"},
		{name: "dotdot model", req: ok(func(r *CompletionRequest) { r.Model = "../m" }), wantErr: ErrInvalidModelPath, wantText: "Invalid model path"},
		{name: "prompt at limit", req: ok(func(r *CompletionRequest) { r.Prompt = strings.Repeat("é", MaxPromptChars) })},
		{name: "prompt too long", req: ok(func(r *CompletionRequest) { r.Prompt = strings.Repeat("a", MaxPromptChars+1) }), wantErr: ErrPromptTooLong, wantText: "Prompt too long"},
		{name: "messages too long", req: ok(func(r *CompletionRequest) {
			r.Prompt = ""
			r.Messages = []ChatMessage{{RoleSystem, strings.Repeat("a", 60000)}, {RoleUser, strings.Repeat("b", 40001)}}
		}), wantErr: ErrPromptTooLong, wantText: "Prompt too long"},
		{name: "max_tokens 0", req: ok(func(r *CompletionRequest) { r.MaxTokens = 0 }), wantErr: ErrInvalidMaxTokens, wantText: "Invalid max_tokens"},
		{name: "max_tokens 4097", req: ok(func(r *CompletionRequest) { r.MaxTokens = 4097 }), wantErr: ErrInvalidMaxTokens, wantText: "Invalid max_tokens"},
		{name: "max_tokens 4096", req: ok(func(r *CompletionRequest) { r.MaxTokens = 4096 })},
		{name: "max_tokens 1", req: ok(func(r *CompletionRequest) { r.MaxTokens = 1 })},
		{name: "temperature 0", req: ok(func(r *CompletionRequest) { r.Temperature = 0 })},
		{name: "temperature 2", req: ok(func(r *CompletionRequest) { r.Temperature = 2 })},
		{name: "temperature 2.01", req: ok(func(r *CompletionRequest) { r.Temperature = 2.01 }), wantErr: ErrTemperatureOutOfRange, wantText: "Temperature out of range"},
		{name: "temperature negative", req: ok(func(r *CompletionRequest) { r.Temperature = -0.1 }), wantErr: ErrTemperatureOutOfRange, wantText: "Temperature out of range"},
		{name: "temperature NaN", req: ok(func(r *CompletionRequest) { r.Temperature = math.NaN() }), wantErr: ErrTemperatureOutOfRange, wantText: "Temperature out of range"},
		{name: "top_p 0", req: ok(func(r *CompletionRequest) { r.TopP = 0 }), wantErr: ErrInvalidRequest},
		{name: "top_p 1", req: ok(func(r *CompletionRequest) { r.TopP = 1 })},
		{name: "top_p 1.1", req: ok(func(r *CompletionRequest) { r.TopP = 1.1 }), wantErr: ErrInvalidRequest},
		{name: "top_k negative", req: ok(func(r *CompletionRequest) { r.TopK = -1 }), wantErr: ErrInvalidRequest},
		{name: "no prompt", req: ok(func(r *CompletionRequest) { r.Prompt = "" }), wantErr: ErrInvalidRequest},
		{name: "prompt and messages", req: ok(func(r *CompletionRequest) { r.Messages = []ChatMessage{{RoleUser, "u"}} }), wantErr: ErrInvalidRequest},
		{name: "chat ok", req: ok(func(r *CompletionRequest) {
			r.Prompt = ""
			r.Messages = []ChatMessage{{RoleSystem, "s"}, {RoleUser, "u"}, {RoleAssistant, "a"}}
		})},
		{name: "bad role", req: ok(func(r *CompletionRequest) { r.Prompt = ""; r.Messages = []ChatMessage{{"bot", "u"}} }), wantErr: ErrInvalidRequest},
		{name: "empty stop", req: ok(func(r *CompletionRequest) { r.Stop = []string{""} }), wantErr: ErrInvalidRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.req.Validate()
			if (err != nil) != (tt.wantErr != nil) || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) {
				t.Fatalf("Validate() error = %v, wantErr %v", err, tt.wantErr)
			}
			if tt.wantText != "" && err.Error() != tt.wantText {
				t.Fatalf("error text %q, want exactly %q", err.Error(), tt.wantText)
			}
		})
	}
}

// TestCheckContext: a prompt plus max_tokens must fit the model's context;
// the refusal names the field and the most it may be.
func TestCheckContext(t *testing.T) {
	tests := []struct {
		name                  string
		prompt, max, ctx      int
		wantParam             string
		wantLimit             int
		wantMaxTokensSentinel bool
	}{
		{name: "fits", prompt: 10, max: 2038, ctx: 2048},
		{name: "max_tokens one over", prompt: 10, max: 2039, ctx: 2048, wantParam: "max_tokens", wantLimit: 2038, wantMaxTokensSentinel: true},
		{name: "max_tokens 4096 on 2048", prompt: 4, max: 4096, ctx: 2048, wantParam: "max_tokens", wantLimit: 2044, wantMaxTokensSentinel: true},
		{name: "prompt fills the context", prompt: 2048, max: 1, ctx: 2048, wantParam: "prompt", wantLimit: 2047},
		{name: "prompt leaves one", prompt: 2047, max: 1, ctx: 2048},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckContext(tt.prompt, tt.max, tt.ctx)
			if tt.wantParam == "" {
				if err != nil {
					t.Fatalf("error %v, want none", err)
				}
				return
			}
			var le *LimitError
			if !errors.As(err, &le) || !errors.Is(err, ErrInvalidRequest) || errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("error %v, want a request LimitError", err)
			}
			if le.Param != tt.wantParam || le.Limit != tt.wantLimit || !strings.HasPrefix(err.Error(), "Invalid "+tt.wantParam+": ") {
				t.Fatalf("param %q limit %d text %q, want %q %d", le.Param, le.Limit, err.Error(), tt.wantParam, tt.wantLimit)
			}
			if errors.Is(err, ErrInvalidMaxTokens) != tt.wantMaxTokensSentinel {
				t.Fatalf("errors.Is(ErrInvalidMaxTokens) = %v", !tt.wantMaxTokensSentinel)
			}
		})
	}
}

func TestCompletionResponseJSON(t *testing.T) {
	resp := CompletionResponse{
		ID: "cmpl-1", Object: ObjectTextCompletion, Created: 1700000000, Model: "m",
		Choices: []Choice{{Index: 0, Text: "hi", FinishReason: FinishReasonStop}},
		Usage:   Usage{PromptTokens: 2, CompletionTokens: 1, TotalTokens: 3},
	}
	b, err := json.Marshal(resp)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"id":"cmpl-1","object":"text_completion","created":1700000000,"model":"m","choices":[{"index":0,"text":"hi","logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":2,"completion_tokens":1,"total_tokens":3}}`
	if string(b) != want {
		t.Fatalf("got  %s\nwant %s", b, want)
	}
	var back CompletionResponse
	if err := json.Unmarshal(b, &back); err != nil || back.Choices[0].Text != "hi" || back.Usage.TotalTokens != 3 {
		t.Fatalf("round trip: %+v %v", back, err)
	}
	chat := Choice{Message: &ChatMessage{RoleAssistant, "hello"}, FinishReason: FinishReasonLength}
	b, _ = json.Marshal(chat)
	if !strings.Contains(string(b), `"message":{"role":"assistant","content":"hello"}`) {
		t.Fatalf("chat choice: %s", b)
	}
}

func TestRouteResponseValidate(t *testing.T) {
	tests := []struct {
		name    string
		r       RouteResponse
		wantErr bool
	}{
		{name: "ok", r: RouteResponse{Expert: "code", Confidence: 0.8, Alternatives: []Alternative{{"general", 0.2}}}},
		{name: "no expert", r: RouteResponse{Confidence: 0.8}, wantErr: true},
		{name: "confidence over 1", r: RouteResponse{Expert: "a", Confidence: 1.2}, wantErr: true},
		{name: "bad alternative", r: RouteResponse{Expert: "a", Confidence: 1, Alternatives: []Alternative{{"b", -0.1}}}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.r.Validate(); (err != nil) != tt.wantErr {
				t.Fatalf("Validate() = %v, wantErr %v", err, tt.wantErr)
			}
		})
	}
}

func TestOverallStatus(t *testing.T) {
	tests := []struct {
		name string
		in   []Component
		want string
	}{
		{name: "none", want: StatusHealthy},
		{name: "all healthy", in: []Component{{Name: "nats", Status: StatusHealthy}}, want: StatusHealthy},
		{name: "degraded", in: []Component{{Name: "a", Status: StatusHealthy}, {Name: "b", Status: StatusDegraded}}, want: StatusDegraded},
		{name: "unhealthy wins", in: []Component{{Name: "a", Status: StatusDegraded}, {Name: "b", Status: StatusUnhealthy}}, want: StatusUnhealthy},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := OverallStatus(tt.in); got != tt.want {
				t.Fatalf("OverallStatus = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestLogEntryJSON(t *testing.T) {
	in := `{"timestamp":"2024-12-01T10:30:00.000Z","level":"INFO","logger":"llm.inference.server","message":"Request completed","request_id":"req-abc123","trace_id":"trace-xyz789","context":{"latency_ms":245.5,"model":"largeforge-7b","tokens_generated":156}}`
	var e LogEntry
	if err := json.Unmarshal([]byte(in), &e); err != nil {
		t.Fatal(err)
	}
	if !e.Timestamp.Equal(time.Date(2024, 12, 1, 10, 30, 0, 0, time.UTC)) || e.RequestID != "req-abc123" || !ValidLogLevel(e.Level) {
		t.Fatalf("decoded %+v", e)
	}
	out, err := json.Marshal(e)
	if err != nil || string(out) != in {
		t.Fatalf("got  %s\nwant %s (%v)", out, in, err)
	}
	if ValidLogLevel("WARN") {
		t.Fatal("WARN is not a dictionary level")
	}
}

func TestMetricsJSONNames(t *testing.T) {
	b, _ := json.Marshal(TrainingMetrics{Loss: 1, GlobalStep: 2})
	want := `{"loss":1,"learning_rate":0,"epoch":0,"global_step":2,"grad_norm":0,"train_samples_per_second":0}`
	if string(b) != want {
		t.Fatalf("got %s", b)
	}
	b, _ = json.Marshal(EvalMetrics{EvalLoss: 1})
	if string(b) != `{"eval_loss":1,"perplexity":0,"accuracy":0}` {
		t.Fatalf("got %s", b)
	}
	if len(MetricLabels) != 9 || MetricLabels[MetricInferenceRequestsTotal][1] != LabelStatus {
		t.Fatalf("MetricLabels = %v", MetricLabels)
	}
}

func FuzzDecodeCompletionRequest(f *testing.F) {
	for _, s := range []string{
		`{"model":"m","prompt":"p"}`, `{"model":"m","prompt":"p","temperature":0,"stop":"x"}`,
		`{"model":"m","messages":[{"role":"user","content":"c"}],"seed":-1}`, `{"stop":[null]}`, `{"max_tokens":1e3}`,
		`[]`, `null`, `{"model":1}`, `{"messages":[1]}`, "{\"prompt\":\"\\ud800\"}", `{"seed":99999999999999999999}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := DecodeCompletionRequest(data)
		if err != nil {
			if !errors.Is(err, ErrInvalidRequest) {
				t.Fatalf("error %v does not wrap ErrInvalidRequest", err)
			}
			return
		}
		_ = r.Validate() // must not panic
		// A decoded request survives a JSON round trip unchanged.
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		back, err := DecodeCompletionRequest(b)
		if err != nil {
			t.Fatalf("re-decode %s: %v", b, err)
		}
		if !reflect.DeepEqual(normalizeReq(back), normalizeReq(r)) {
			t.Fatalf("round trip changed the request:\n%+v\n%+v", r, back)
		}
	})
}

// normalizeReq maps empty lists to nil (omitempty drops them on the wire).
func normalizeReq(r CompletionRequest) CompletionRequest {
	if len(r.Stop) == 0 {
		r.Stop = nil
	}
	if len(r.Messages) == 0 {
		r.Messages = nil
	}
	return r
}

func BenchmarkDecodeCompletionRequest(b *testing.B) {
	body := []byte(`{"model":"stories260K","prompt":"Once upon a time there was a little girl who","max_tokens":64,"temperature":0.8,"stop":["\n\n"],"seed":1}`)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		r, err := DecodeCompletionRequest(body)
		if err != nil {
			b.Fatal(err)
		}
		if err := r.Validate(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
}
