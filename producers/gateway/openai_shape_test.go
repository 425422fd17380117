package gateway_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/largeforge/largeforge/producers/gateway"
)

// A chat completion's choices carry no text (OpenAI's chat choice: index,
// message, logprobs, finish_reason), and with stream_options.include_usage
// every chunk before the usage chunk carries "usage": null.
func TestOpenAIResponseShape(t *testing.T) {
	s := newStack(t, gateway.Config{})
	msgs := []map[string]any{{"role": "user", "content": "Hi"}}
	code, out := post(t, s.url+"/v1/chat/completions", map[string]any{"model": "stories", "messages": msgs, "max_tokens": 2})
	var chat struct {
		Choices []map[string]json.RawMessage `json:"choices"`
	}
	if err := json.Unmarshal(out, &chat); code != http.StatusOK || err != nil || len(chat.Choices) != 1 {
		t.Fatalf("%d %s", code, out)
	}
	if _, ok := chat.Choices[0]["text"]; ok {
		t.Errorf("chat choice carries text: %s", out)
	}
	if _, ok := chat.Choices[0]["message"]; !ok {
		t.Errorf("chat choice without message: %s", out)
	}

	for _, include := range []bool{true, false} {
		body, _ := json.Marshal(map[string]any{"model": "stories", "messages": msgs, "max_tokens": 3, "stream": true,
			"stream_options": map[string]any{"include_usage": include}})
		resp, err := http.Post(s.url+"/v1/chat/completions", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		var chunks []map[string]json.RawMessage
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			data, ok := strings.CutPrefix(sc.Text(), "data: ")
			if !ok || data == "[DONE]" {
				continue
			}
			var c map[string]json.RawMessage
			if err := json.Unmarshal([]byte(data), &c); err != nil {
				t.Fatalf("chunk %q: %v", data, err)
			}
			chunks = append(chunks, c)
		}
		resp.Body.Close()
		if len(chunks) < 2 {
			t.Fatalf("include_usage %v: %d chunks", include, len(chunks))
		}
		for i, c := range chunks[:len(chunks)-1] {
			u, ok := c["usage"]
			if include && (!ok || string(u) != "null") || !include && ok {
				t.Errorf("include_usage %v: chunk %d usage %q (present %v)", include, i, u, ok)
			}
		}
		if u := chunks[len(chunks)-1]["usage"]; !bytes.Contains(u, []byte("total_tokens")) {
			t.Errorf("include_usage %v: last chunk's usage %s", include, u)
		}
	}
}

// Completions parameters the workers cannot carry out (echo, best_of,
// suffix; modalities other than text) get a 400 naming them; their neutral
// values are accepted.
func TestOpenAIUnsupportedCompletionParameters(t *testing.T) {
	s := newStack(t, gateway.Config{})
	tests := []struct {
		path      string
		extra     map[string]any
		wantParam string // "" for 200
	}{
		{"/v1/completions", map[string]any{"echo": true}, "echo"},
		{"/v1/completions", map[string]any{"echo": false}, ""},
		{"/v1/completions", map[string]any{"best_of": 3}, "best_of"},
		{"/v1/completions", map[string]any{"best_of": 1}, ""},
		{"/v1/completions", map[string]any{"suffix": "The end."}, "suffix"},
		{"/v1/completions", map[string]any{"suffix": nil}, ""},
		{"/v1/chat/completions", map[string]any{"modalities": []string{"text", "audio"}}, "modalities"},
		{"/v1/chat/completions", map[string]any{"modalities": []string{"text"}}, ""},
	}
	for _, tt := range tests {
		body := map[string]any{"model": "stories", "max_tokens": 2}
		if tt.path == "/v1/completions" {
			body["prompt"] = "Once upon a time"
		} else {
			body["messages"] = []map[string]any{{"role": "user", "content": "Hi"}}
		}
		for k, v := range tt.extra {
			body[k] = v
		}
		code, out := post(t, s.url+tt.path, body)
		switch {
		case tt.wantParam == "" && code != http.StatusOK:
			t.Errorf("%s %v: %d %s, want 200", tt.path, tt.extra, code, out)
		case tt.wantParam != "" && (code != http.StatusBadRequest || !strings.Contains(string(out), `"param":"`+tt.wantParam+`"`) ||
			!strings.Contains(string(out), `"code":"unsupported_parameter"`)):
			t.Errorf("%s %v: %d %s, want 400 unsupported_parameter naming %s", tt.path, tt.extra, code, out, tt.wantParam)
		}
	}
}
