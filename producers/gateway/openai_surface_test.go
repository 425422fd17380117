package gateway_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/largeforge/largeforge/producers/gateway"
	"github.com/largeforge/largeforge/schemas"
)

// The request surface OpenAI clients rely on, driven with openai-go/v3
// against the real gateway and stories260K: max_completion_tokens, n,
// logprobs/top_logprobs, stream_options.include_usage, content parts and
// the developer role, GET /v1/models/{id}.
func TestOpenAIRequestSurface(t *testing.T) {
	s := newStack(t, gateway.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	user := []schemas.ChatMessage{{Role: "user", Content: "Tell me a story"}}

	// max_completion_tokens is the completion's limit, and n gives n
	// choices, choice i sampled with seed+i.
	seed := int64(7)
	want := make([]string, 3)
	for i := range want {
		sd := seed + int64(i)
		want[i] = s.direct(t, schemas.CompletionRequest{Messages: user, MaxTokens: 5, Temperature: 1, TopP: 1, TopK: 50, Seed: &sd}).Text
	}
	resp, err := s.oai.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "stories",
		Messages:            []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Tell me a story")},
		MaxCompletionTokens: openai.Int(5), N: openai.Int(3), Seed: openai.Int(seed), Temperature: openai.Float(1), TopP: openai.Float(1)})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Choices) != 3 || resp.Usage.CompletionTokens > 15 || resp.Usage.TotalTokens != resp.Usage.PromptTokens+resp.Usage.CompletionTokens {
		t.Fatalf("n=3, max_completion_tokens=5: %d choices, usage %+v", len(resp.Choices), resp.Usage)
	}
	for i, c := range resp.Choices {
		if c.Index != int64(i) || c.Message.Content != want[i] {
			t.Errorf("choice %d (index %d): %q, want %q (seed %d)", i, c.Index, c.Message.Content, want[i], seed+int64(i))
		}
	}

	// logprobs and top_logprobs: one entry per generated token, the chosen
	// token the most likely under greedy decoding; the tokens read as the text.
	resp, err = s.oai.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "stories",
		Messages:  []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Tell me a story")},
		MaxTokens: openai.Int(6), Temperature: openai.Float(0), Logprobs: openai.Bool(true), TopLogprobs: openai.Int(2)})
	if err != nil {
		t.Fatal(err)
	}
	lp := resp.Choices[0].Logprobs.Content
	resp0Text := resp.Choices[0].Message.Content
	var text strings.Builder
	for _, tl := range lp {
		if len(tl.TopLogprobs) != 2 || tl.TopLogprobs[0].Token != tl.Token || tl.TopLogprobs[0].Logprob != tl.Logprob || tl.Logprob > 0 || string(bytesOf(tl.Bytes)) != tl.Token {
			t.Errorf("token logprob %+v", tl)
		}
		text.WriteString(tl.Token)
	}
	if len(lp) == 0 || len(lp) > int(resp.Usage.CompletionTokens) || !strings.HasPrefix(text.String(), resp.Choices[0].Message.Content) {
		t.Errorf("%d logprobs reading %q for %d tokens %q", len(lp), text.String(), resp.Usage.CompletionTokens, resp.Choices[0].Message.Content)
	}
	cresp, err := s.oai.Completions.New(ctx, openai.CompletionNewParams{Model: "stories",
		Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("Once upon a time")}, MaxTokens: openai.Int(4), Temperature: openai.Float(0), Logprobs: openai.Int(1)})
	if err != nil {
		t.Fatal(err)
	}
	if l := cresp.Choices[0].Logprobs; len(l.Tokens) == 0 || len(l.TokenLogprobs) != len(l.Tokens) || len(l.TopLogprobs) != len(l.Tokens) || strings.Join(l.Tokens, "") != cresp.Choices[0].Text {
		t.Errorf("completions logprobs %+v for %q", l, cresp.Choices[0].Text)
	}

	// The developer role is the system role; text parts are joined.
	sys := []schemas.ChatMessage{{Role: "system", Content: "Be kind.\nBe brief."}, {Role: "user", Content: "Tell me a story"}}
	wantSys := s.direct(t, schemas.CompletionRequest{Messages: sys, MaxTokens: 8, Temperature: 0}).Text
	resp, err = s.oai.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "stories", MaxTokens: openai.Int(8), Temperature: openai.Float(0),
		Messages: []openai.ChatCompletionMessageParamUnion{
			openai.DeveloperMessage([]openai.ChatCompletionContentPartTextParam{{Text: "Be kind."}, {Text: "Be brief."}}),
			openai.UserMessage([]openai.ChatCompletionContentPartUnionParam{openai.TextContentPart("Tell me a story")}),
		}})
	if err != nil || resp.Choices[0].Message.Content != wantSys {
		t.Errorf("developer + parts: %v %q, want %q", err, resp.Choices[0].Message.Content, wantSys)
	}

	// stream_options.include_usage: every choice streams under its index,
	// then one last chunk with no choices carries the usage.
	st := s.oai.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{Model: "stories", MaxTokens: openai.Int(6), N: openai.Int(2),
		Messages:      []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Tell me a story")},
		StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}})
	var chunks []openai.ChatCompletionChunk
	for st.Next() {
		chunks = append(chunks, st.Current())
	}
	if err := st.Err(); err != nil {
		t.Fatal(err)
	}
	finished := map[int64]bool{}
	for _, c := range chunks[:len(chunks)-1] {
		for _, ch := range c.Choices {
			finished[ch.Index] = finished[ch.Index] || ch.FinishReason != ""
		}
		if c.Usage.TotalTokens != 0 {
			t.Errorf("usage before the last chunk: %+v", c.Usage)
		}
	}
	last := chunks[len(chunks)-1]
	if len(last.Choices) != 0 || last.Usage.CompletionTokens == 0 || !finished[0] || !finished[1] {
		t.Errorf("last chunk %+v; choices finished %v", last, finished)
	}

	// Streamed, a choice's logprobs come with its last chunk.
	st = s.oai.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{Model: "stories", MaxTokens: openai.Int(6), Temperature: openai.Float(0),
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Tell me a story")}, Logprobs: openai.Bool(true)})
	var streamed []openai.ChatCompletionTokenLogprob
	var streamedText strings.Builder
	for st.Next() {
		for _, ch := range st.Current().Choices {
			streamed = append(streamed, ch.Logprobs.Content...)
			streamedText.WriteString(ch.Delta.Content)
		}
	}
	if err := st.Err(); err != nil || len(streamed) != len(lp) || streamedText.String() != resp0Text {
		t.Errorf("streamed logprobs: %d for %q (%v), want %d for %q", len(streamed), streamedText.String(), err, len(lp), resp0Text)
	}

	// GET /v1/models/{id}: the model object, or OpenAI's 404.
	m, err := s.oai.Models.Get(ctx, "stories")
	if err != nil || m.ID != "stories" || m.Object != "model" {
		t.Errorf("get stories: %+v, %v", m, err)
	}
	_, err = s.oai.Models.Get(ctx, "nope")
	var oe *openai.Error
	if !errors.As(err, &oe) || oe.StatusCode != http.StatusNotFound || oe.Code != "model_not_found" {
		t.Errorf("get nope: %v, want a 404 model_not_found", err)
	}
}

func bytesOf(b []int64) []byte {
	out := make([]byte, len(b))
	for i, v := range b {
		out[i] = byte(v)
	}
	return out
}

// Parameters the gateway cannot honour get a 400 naming them; a neutral
// value of one is accepted.
func TestOpenAIUnsupportedParameters(t *testing.T) {
	s := newStack(t, gateway.Config{})
	msgs := []map[string]any{{"role": "user", "content": "Hi"}}
	tests := []struct {
		name      string
		extra     map[string]any
		wantParam string // "" for 200
	}{
		{"tools", map[string]any{"tools": []any{map[string]any{"type": "function", "function": map[string]any{"name": "f"}}}}, "tools"},
		{"tool_choice", map[string]any{"tool_choice": "auto"}, "tool_choice"},
		{"functions", map[string]any{"functions": []any{map[string]any{"name": "f"}}}, "functions"},
		{"json response_format", map[string]any{"response_format": map[string]any{"type": "json_object"}}, "response_format"},
		{"text response_format", map[string]any{"response_format": map[string]any{"type": "text"}}, ""},
		{"empty tools", map[string]any{"tools": []any{}}, ""},
		{"presence_penalty", map[string]any{"presence_penalty": 0.5}, "presence_penalty"},
		{"n too large", map[string]any{"n": gateway.MaxChoices + 1}, "n"},
		{"n zero", map[string]any{"n": 0}, "n"},
		{"both token limits", map[string]any{"max_tokens": 4, "max_completion_tokens": 5}, "max_completion_tokens"},
		{"stream_options without stream", map[string]any{"stream_options": map[string]any{"include_usage": true}}, "stream_options"},
		{"image part", map[string]any{"messages": []any{map[string]any{"role": "user", "content": []any{map[string]any{"type": "image_url", "image_url": map[string]any{"url": "x"}}}}}}, "messages[0].content[0].type"},
		{"top_logprobs over 20", map[string]any{"logprobs": true, "top_logprobs": 21}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := map[string]any{"model": "stories", "messages": msgs, "max_tokens": 2}
			for k, v := range tt.extra {
				body[k] = v
			}
			if tt.name == "both token limits" {
				body["max_tokens"] = 4
			}
			code, out := post(t, s.url+"/v1/chat/completions", body)
			switch {
			case tt.name == "top_logprobs over 20":
				if code != http.StatusBadRequest || !strings.Contains(string(out), "top_logprobs") {
					t.Errorf("%d %s", code, out)
				}
			case tt.wantParam == "":
				if code != http.StatusOK {
					t.Errorf("%d %s, want 200", code, out)
				}
			case code != http.StatusBadRequest || !strings.Contains(string(out), `"param":"`+tt.wantParam+`"`):
				t.Errorf("%d %s, want 400 naming %s", code, out, tt.wantParam)
			}
		})
	}
}
