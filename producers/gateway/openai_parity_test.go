package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/largeforge/largeforge/producers/gateway"
	"github.com/largeforge/largeforge/schemas"
)

// apiErr is an OpenAI error body.
type apiErr struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	} `json:"error"`
}

// Where the gateway differed from OpenAI's reference (issue 19's review):
// unknown parameters, the harmless ones clients send, stop over 4, the
// param of a refusal, the same missing and unknown parameter errors on every
// API, refusal null in logprobs, a prompt list on /v1/completions and the
// first and last chunks of a chat stream.
func TestOpenAIReferenceParity(t *testing.T) {
	s := newStack(t, gateway.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	msgs := []map[string]any{{"role": "user", "content": "Hi"}}
	tests := []struct {
		name      string
		path      string // "" for chat
		body      map[string]any
		wantCode  int
		wantParam string // "" for null
		wantErr   string // code
		wantMsg   string // part of the message
	}{
		{name: "unknown field", body: map[string]any{"foo": 1}, wantCode: 400, wantParam: "foo", wantErr: "unknown_parameter", wantMsg: "Unrecognized request argument supplied: foo"},
		{name: "reasoning_effort", body: map[string]any{"reasoning_effort": "low"}, wantCode: 400, wantParam: "reasoning_effort", wantErr: "unsupported_parameter"},
		{name: "verbosity", body: map[string]any{"verbosity": "low"}, wantCode: 400, wantParam: "verbosity", wantErr: "unsupported_parameter"},
		{name: "web_search_options", body: map[string]any{"web_search_options": map[string]any{}}, wantCode: 400, wantParam: "web_search_options", wantErr: "unsupported_parameter"},
		{name: "harmless defaults", body: map[string]any{"user": "u-1", "store": false, "metadata": map[string]string{"run": "a"}, "service_tier": "auto"}, wantCode: 200},
		{name: "store true", body: map[string]any{"store": true}, wantCode: 400, wantParam: "store", wantErr: "unsupported_parameter"},
		{name: "service_tier flex", body: map[string]any{"service_tier": "flex"}, wantCode: 400, wantParam: "service_tier", wantErr: "unsupported_parameter"},
		{name: "metadata not strings", body: map[string]any{"metadata": map[string]any{"a": 1}}, wantCode: 400, wantParam: "metadata", wantErr: "invalid_type"},
		{name: "four stops", body: map[string]any{"stop": []string{"a", "b", "c", "d"}}, wantCode: 200},
		{name: "five stops", body: map[string]any{"stop": []string{"a", "b", "c", "d", "e"}}, wantCode: 400, wantParam: "stop", wantErr: "array_above_max_length"},
		{name: "top_logprobs 21", body: map[string]any{"logprobs": true, "top_logprobs": 21}, wantCode: 400, wantParam: "top_logprobs", wantErr: "integer_above_max_value"},
		{name: "top_logprobs without logprobs", body: map[string]any{"top_logprobs": 2}, wantCode: 400, wantParam: "top_logprobs", wantErr: "invalid_value"},
		{name: "seed 1.5", body: map[string]any{"seed": 1.5}, wantCode: 400, wantParam: "seed", wantErr: "invalid_type", wantMsg: "Invalid type for 'seed': expected an integer, but got a decimal number instead."},
		{name: "temperature string", body: map[string]any{"temperature": "1"}, wantCode: 400, wantParam: "temperature", wantErr: "invalid_type"},
		{name: "role tool", body: map[string]any{"messages": []map[string]any{{"role": "tool", "content": "x"}}}, wantCode: 400, wantParam: "messages[0].role", wantErr: "unsupported_parameter"},
		{name: "role unknown", body: map[string]any{"messages": []map[string]any{{"role": "robot", "content": "x"}}}, wantCode: 400, wantParam: "messages[0].role", wantErr: "invalid_value"},
		{name: "missing messages", body: map[string]any{"messages": nil}, wantCode: 400, wantParam: "messages", wantErr: "missing_required_parameter", wantMsg: "Missing required parameter: 'messages'."},
		{name: "unknown model", body: map[string]any{"model": "nope"}, wantCode: 404, wantErr: "model_not_found", wantMsg: "The model `nope` does not exist or you do not have access to it."},
		{name: "completions unknown field", path: "/v1/completions", body: map[string]any{"prompt": "Hi", "messages": nil, "foo": 1}, wantCode: 400, wantParam: "foo", wantErr: "unknown_parameter"},
		{name: "completions missing prompt", path: "/v1/completions", body: map[string]any{"messages": nil}, wantCode: 400, wantParam: "prompt", wantErr: "missing_required_parameter", wantMsg: "Missing required parameter: 'prompt'."},
		{name: "completions token prompt", path: "/v1/completions", body: map[string]any{"prompt": []int{1, 2}, "messages": nil}, wantCode: 400, wantParam: "prompt", wantErr: "invalid_type"},
		{name: "completions too many prompts", path: "/v1/completions", body: map[string]any{"prompt": []string{"a", "b", "c"}, "n": 6, "messages": nil}, wantCode: 400, wantParam: "prompt", wantErr: "invalid_value"},
		{name: "batches unknown field", path: "/v1/batches", body: map[string]any{"foo": 1}, wantCode: 400, wantParam: "foo", wantErr: "unknown_parameter", wantMsg: "Unrecognized request argument supplied: foo"},
		{name: "batches missing", path: "/v1/batches", body: map[string]any{}, wantCode: 400, wantParam: "input_file_id", wantErr: "missing_required_parameter", wantMsg: "Missing required parameter: 'input_file_id'."},
		{name: "fine-tuning unknown field", path: "/v1/fine_tuning/jobs", body: map[string]any{"foo": 1}, wantCode: 400, wantParam: "foo", wantErr: "unknown_parameter", wantMsg: "Unrecognized request argument supplied: foo"},
		{name: "fine-tuning missing", path: "/v1/fine_tuning/jobs", body: map[string]any{}, wantCode: 400, wantParam: "training_file", wantErr: "missing_required_parameter", wantMsg: "Missing required parameter: 'training_file'."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path, body := tt.path, map[string]any{}
			if path == "" || path == "/v1/completions" {
				body = map[string]any{"model": "stories", "messages": msgs, "max_tokens": 2}
			}
			if path == "" {
				path = "/v1/chat/completions"
			}
			for k, v := range tt.body {
				if v == nil {
					delete(body, k)
				} else {
					body[k] = v
				}
			}
			code, out := post(t, s.url+path, body)
			if code != tt.wantCode {
				t.Fatalf("%d %s, want %d", code, out, tt.wantCode)
			}
			if code == 200 {
				return
			}
			var e apiErr
			if err := json.Unmarshal(out, &e); err != nil {
				t.Fatalf("%s: %v", out, err)
			}
			param := ""
			if e.Error.Param != nil {
				param = *e.Error.Param
			}
			if param != tt.wantParam || e.Error.Code == nil || *e.Error.Code != tt.wantErr || !strings.Contains(e.Error.Message, tt.wantMsg) || e.Error.Type != "invalid_request_error" {
				t.Errorf("%s, want param %q code %q message with %q", out, tt.wantParam, tt.wantErr, tt.wantMsg)
			}
		})
	}

	// Files: a missing part is missing_required_parameter, another part
	// unknown_parameter.
	if code, out := s.rawUpload(t, ctx, "{}\n", ""); code != 400 || !strings.Contains(out, `"code":"missing_required_parameter"`) || !strings.Contains(out, "Missing required parameter: 'purpose'.") {
		t.Errorf("upload without purpose: %d %s", code, out)
	}

	// Chat logprobs: refusal null, as OpenAI sends, streamed or not.
	code, out := post(t, s.url+"/v1/chat/completions", map[string]any{"model": "stories", "messages": msgs, "max_tokens": 3, "logprobs": true})
	if code != 200 || !bytes.Contains(out, []byte(`"refusal":null`)) {
		t.Errorf("chat logprobs: %d %s, want \"refusal\":null", code, out)
	}

	// A stream's first chunk of a choice is the role alone, its last an
	// empty delta with the finish_reason.
	events := streamEvents(t, s.url+"/v1/chat/completions", map[string]any{"model": "stories", "messages": msgs, "max_tokens": 3, "stream": true, "logprobs": true})
	type delta struct {
		Choices []struct {
			Delta        json.RawMessage `json:"delta"`
			Logprobs     json.RawMessage `json:"logprobs"`
			FinishReason *string         `json:"finish_reason"`
		} `json:"choices"`
	}
	var first, last delta
	_ = json.Unmarshal([]byte(events[0]), &first)
	_ = json.Unmarshal([]byte(events[len(events)-1]), &last)
	if len(first.Choices) != 1 || string(first.Choices[0].Delta) != `{"role":"assistant","content":""}` || first.Choices[0].FinishReason != nil {
		t.Errorf("first chunk %s, want the role alone", events[0])
	}
	if len(last.Choices) != 1 || string(last.Choices[0].Delta) != `{}` || last.Choices[0].FinishReason == nil || !bytes.Contains(last.Choices[0].Logprobs, []byte(`"refusal":null`)) {
		t.Errorf("last chunk %s, want delta {}, a finish_reason and refusal null", events[len(events)-1])
	}
	for _, ev := range events[1 : len(events)-1] {
		if strings.Contains(ev, `"role"`) || !strings.Contains(ev, `"content":`) {
			t.Errorf("middle chunk %s, want content alone", ev)
		}
	}

	// A prompt list: n choices per prompt, choice i*n+j the j-th of prompt
	// i (seed+j), the prompts counted in the usage.
	prompts := []string{"Once upon a time", "The dog"}
	seed := int64(3)
	cresp, err := s.oai.Completions.New(ctx, openai.CompletionNewParams{Model: "stories", Prompt: openai.CompletionNewParamsPromptUnion{OfArrayOfStrings: prompts},
		N: openai.Int(2), MaxTokens: openai.Int(4), Seed: openai.Int(seed), Temperature: openai.Float(1), TopP: openai.Float(1)})
	if err != nil {
		t.Fatal(err)
	}
	wantPrompt := 0
	for i, p := range prompts {
		for j := range 2 {
			sd := seed + int64(j)
			want := s.direct(t, schemas.CompletionRequest{Prompt: p, MaxTokens: 4, Temperature: 1, TopP: 1, TopK: schemas.DefaultTopK, Seed: &sd})
			if j == 0 {
				wantPrompt += want.PromptTokens
			}
			k := i*2 + j
			if len(cresp.Choices) != 4 || cresp.Choices[k].Index != int64(k) || cresp.Choices[k].Text != want.Text {
				t.Errorf("prompt %d choice %d: %d choices, want index %d %q", i, j, len(cresp.Choices), k, want.Text)
				if len(cresp.Choices) == 4 {
					t.Logf("choice %d: index %d %q", k, cresp.Choices[k].Index, cresp.Choices[k].Text)
				}
			}
		}
	}
	if cresp.Usage.PromptTokens != int64(wantPrompt) {
		t.Errorf("prompt tokens %d, want %d", cresp.Usage.PromptTokens, wantPrompt)
	}
}

// streamEvents posts body and returns the data of each server-sent event
// before [DONE].
func streamEvents(t *testing.T, url string, body any) []string {
	t.Helper()
	_, out := post(t, url, body)
	var events []string
	for _, line := range strings.Split(string(out), "\n") {
		if ev, ok := strings.CutPrefix(line, "data: "); ok && ev != "[DONE]" {
			events = append(events, ev)
		}
	}
	if len(events) < 3 {
		t.Fatalf("%d events %q, want at least the role, a token and the last", len(events), events)
	}
	return events
}
