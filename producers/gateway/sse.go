package gateway

import (
	"encoding/json"
	"net/http"

	"github.com/largeforge/largeforge/schemas"
)

// Chunk object names of streamed responses (OpenAI's).
const (
	ObjectChatCompletionChunk = "chat.completion.chunk"
)

// StreamChoice is a choice of a streamed chunk: Text for completions, Delta
// for chat. FinishReason is null until the last chunk.
type StreamChoice struct {
	Index        int             `json:"index"`
	Text         *string         `json:"text,omitempty"`
	Delta        *Delta          `json:"delta,omitempty"`
	Logprobs     json.RawMessage `json:"logprobs"`
	FinishReason *string         `json:"finish_reason"`
}

// Delta is the new text of a streamed chat chunk; Role is set on the first.
type Delta struct {
	Role    string `json:"role,omitempty"`
	Content string `json:"content"`
}

// StreamChunk is one server-sent event of a streamed completion.
type StreamChunk struct {
	ID      string         `json:"id"`
	Object  string         `json:"object"`
	Created int64          `json:"created"`
	Model   string         `json:"model"`
	Choices []StreamChoice `json:"choices"`
	Usage   *schemas.Usage `json:"usage,omitempty"`
}

// sseWriter writes a streamed completion as server-sent events.
type sseWriter struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	chat    bool
	model   string
	id      string
	created int64
	started bool
}

func (s *sseWriter) start() {
	if s.started {
		return
	}
	s.started = true
	h := s.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("Connection", "keep-alive")
	s.w.WriteHeader(http.StatusOK)
}

func (s *sseWriter) event(v any) error {
	s.start()
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	buf := make([]byte, 0, len(data)+8)
	buf = append(append(append(buf, "data: "...), data...), "\n\n"...)
	if _, err := s.w.Write(buf); err != nil {
		return err
	}
	return s.rc.Flush()
}

func (s *sseWriter) chunkOf(text string, finish *string) StreamChunk {
	c := StreamChunk{ID: s.id, Object: schemas.ObjectTextCompletion, Created: s.created, Model: s.model}
	ch := StreamChoice{Index: 0, Logprobs: json.RawMessage("null"), FinishReason: finish}
	if s.chat {
		c.Object = ObjectChatCompletionChunk
		ch.Delta = &Delta{Content: text}
		if !s.started {
			ch.Delta.Role = schemas.RoleAssistant
		}
	} else {
		ch.Text = &text
	}
	c.Choices = []StreamChoice{ch}
	return c
}

// chunk sends a piece of generated text; an error (the client is gone)
// cancels the generation.
func (s *sseWriter) chunk(text []byte) error {
	return s.event(s.chunkOf(string(text), nil))
}

// finish sends the last chunk (finish_reason and usage) and data: [DONE].
func (s *sseWriter) finish(resp schemas.CompletionResponse) {
	finish := schemas.FinishReasonStop
	if len(resp.Choices) > 0 && resp.Choices[0].FinishReason != "" {
		finish = resp.Choices[0].FinishReason
	}
	last := s.chunkOf("", &finish)
	last.Usage = &resp.Usage
	if err := s.event(last); err != nil {
		return
	}
	_, _ = s.w.Write([]byte("data: [DONE]\n\n"))
	_ = s.rc.Flush()
}
