package gateway

import (
	"encoding/json"
	"net/http"
	"sync"

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

// Delta is the new text of a streamed chat chunk. As OpenAI streams a
// choice: a first chunk with the role alone ({"role":"assistant",
// "content":""}), then chunks with Content alone, then the last with the
// finish_reason and an empty delta ({}).
type Delta struct {
	Role    string  `json:"role,omitempty"`
	Content *string `json:"content,omitempty"`
}

// StreamChunk is one server-sent event of a streamed completion.
type StreamChunk struct {
	ID      string         `json:"id"`
	Object  string         `json:"object"`
	Created int64          `json:"created"`
	Model   string         `json:"model"`
	Choices []StreamChoice `json:"choices"`
	Usage   *schemas.Usage `json:"usage,omitempty"`
	// UsageNull writes a nil Usage as null (stream_options.include_usage).
	UsageNull bool `json:"-"`
}

// sseWriter writes a streamed completion as server-sent events: the chunks
// of each choice (n of them at once) as they come, then each choice's last
// chunk (finish_reason, and its logprobs when asked for), and with
// includeUsage a last chunk with no choices and the usage (else the usage
// rides on the last choice chunk).
type sseWriter struct {
	w            http.ResponseWriter
	rc           *http.ResponseController
	chat         bool
	model        string
	id           string
	created      int64
	includeUsage bool

	mu       sync.Mutex // chunk is called by the choices at once
	started  bool
	roleSent map[int]bool // choices whose first chunk (with the role) went out
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

func (s *sseWriter) chunkOf(index int, text string, finish *string) StreamChunk {
	c := StreamChunk{ID: s.id, Object: schemas.ObjectTextCompletion, Created: s.created, Model: s.model, UsageNull: s.includeUsage}
	ch := StreamChoice{Index: index, Logprobs: json.RawMessage("null"), FinishReason: finish}
	if s.chat {
		c.Object = ObjectChatCompletionChunk
		ch.Delta = &Delta{}
		if finish == nil {
			ch.Delta.Content = &text
		}
	} else {
		ch.Text = &text
	}
	c.Choices = []StreamChoice{ch}
	return c
}

// chunk sends a piece of choice index's generated text; an error (the
// client is gone) cancels the generation.
func (s *sseWriter) chunk(index int, text []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.sendRole(index); err != nil {
		return err
	}
	return s.event(s.chunkOf(index, string(text), nil))
}

// sendRole sends choice index's role-only first chunk of a chat stream,
// once.
func (s *sseWriter) sendRole(index int) error {
	if !s.chat || s.roleSent[index] {
		return nil
	}
	if s.roleSent == nil {
		s.roleSent = map[int]bool{}
	}
	s.roleSent[index] = true
	c := s.chunkOf(index, "", nil)
	c.Choices[0].Delta.Role = schemas.RoleAssistant
	return s.event(c)
}

// finish sends each choice's last chunk, the usage and data: [DONE].
func (s *sseWriter) finish(resp schemas.CompletionResponse) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, ch := range resp.Choices {
		finish := ch.FinishReason
		if finish == "" {
			finish = schemas.FinishReasonStop
		}
		if err := s.sendRole(ch.Index); err != nil {
			return
		}
		last := s.chunkOf(ch.Index, "", &finish)
		if len(ch.Logprobs) > 0 {
			last.Choices[0].Logprobs = ch.Logprobs
		}
		if !s.includeUsage && i == len(resp.Choices)-1 {
			last.Usage = &resp.Usage
		}
		if err := s.event(last); err != nil {
			return
		}
	}
	if s.includeUsage {
		usage := StreamChunk{ID: s.id, Object: ObjectChatCompletionChunk, Created: s.created, Model: s.model, Choices: []StreamChoice{}, Usage: &resp.Usage}
		if !s.chat {
			usage.Object = schemas.ObjectTextCompletion
		}
		if err := s.event(usage); err != nil {
			return
		}
	}
	_, _ = s.w.Write([]byte("data: [DONE]\n\n"))
	_ = s.rc.Flush()
}
