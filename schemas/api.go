package schemas

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"unicode/utf8"
)

// CompletionRequest defaults and limits (§3.1, §7.1).
const (
	DefaultMaxTokens   = 256
	DefaultTemperature = 0.7
	DefaultTopP        = 0.9
	DefaultTopK        = 50
	MaxMaxTokens       = 4096
	MaxTemperature     = 2.0
	// MaxPromptChars bounds a prompt (or the sum of a chat's message
	// contents) in Unicode code points.
	MaxPromptChars = 100000
)

// Chat roles (§3.3).
const (
	RoleSystem    = "system"
	RoleUser      = "user"
	RoleAssistant = "assistant"
)

// ChatMessage is one message of a chat request or response (§3.3).
type ChatMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// Validate checks that Role is system, user or assistant; errors wrap
// ErrInvalidRequest.
func (m ChatMessage) Validate() error {
	switch m.Role {
	case RoleSystem, RoleUser, RoleAssistant:
		return nil
	}
	return fmt.Errorf("%w: role %q is not one of system, user, assistant", ErrInvalidRequest, m.Role)
}

// CompletionRequest is a text completion request (§3.1), or a chat request
// when Messages is set instead of Prompt.
type CompletionRequest struct {
	Model       string        `json:"model"`
	Prompt      string        `json:"prompt,omitempty"`
	Messages    []ChatMessage `json:"messages,omitempty"`
	MaxTokens   int           `json:"max_tokens"`
	Temperature float64       `json:"temperature"`
	TopP        float64       `json:"top_p"`
	TopK        int           `json:"top_k"`
	// Stop holds the stop sequences; on the wire a single string or a list.
	Stop   []string `json:"stop,omitempty"`
	Stream bool     `json:"stream"`
	// Seed makes sampling reproducible when set.
	Seed *int64 `json:"seed,omitempty"`
	// Logprobs asks for each generated token's log-probability, with the
	// TopLogprobs (0..MaxTopLogprobs) most likely tokens at its position.
	// On the wire "logprobs" is a bool (chat), or a count (the legacy
	// completions form: logprobs n means Logprobs with TopLogprobs n).
	Logprobs    bool `json:"logprobs,omitempty"`
	TopLogprobs int  `json:"top_logprobs,omitempty"`
}

// MaxTopLogprobs is the most alternatives top_logprobs may ask for.
const MaxTopLogprobs = 20

// DefaultCompletionRequest returns a request holding the §3.1 defaults.
func DefaultCompletionRequest() CompletionRequest {
	return CompletionRequest{
		MaxTokens:   DefaultMaxTokens,
		Temperature: DefaultTemperature,
		TopP:        DefaultTopP,
		TopK:        DefaultTopK,
	}
}

// IsChat reports whether the request is a chat request (has messages).
func (r CompletionRequest) IsChat() bool { return len(r.Messages) > 0 }

// DecodeCompletionRequest decodes one JSON request object. Defaults apply
// only to absent (or null) fields: an explicit "temperature": 0 stays 0.
// Keys are matched exactly (case-sensitive); keys this struct does not know
// (other OpenAI parameters) are ignored; duplicate keys: the last wins.
// "stop" may be a string or a list of strings. It does not call Validate.
// Errors wrap ErrInvalidRequest.
func DecodeCompletionRequest(data []byte) (CompletionRequest, error) {
	if !utf8.Valid(data) {
		return CompletionRequest{}, fmt.Errorf("%w: invalid UTF-8", ErrInvalidRequest)
	}
	data = bytes.TrimSpace(data)
	if len(data) == 0 || data[0] != '{' {
		return CompletionRequest{}, fmt.Errorf("%w: want a JSON object", ErrInvalidRequest)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return CompletionRequest{}, fmt.Errorf("%w: %v", ErrInvalidRequest, err)
	}
	r := DefaultCompletionRequest()
	fields := []struct {
		key string
		dst any
	}{
		{"model", &r.Model},
		{"prompt", &r.Prompt},
		{"max_tokens", &r.MaxTokens},
		{"temperature", &r.Temperature},
		{"top_p", &r.TopP},
		{"top_k", &r.TopK},
		{"stream", &r.Stream},
		{"seed", &r.Seed},
		{"top_logprobs", &r.TopLogprobs},
	}
	for _, f := range fields {
		v, ok := raw[f.key]
		if !ok || isNull(v) {
			continue
		}
		if err := json.Unmarshal(v, f.dst); err != nil {
			return CompletionRequest{}, fmt.Errorf("%w: %s: %v", ErrInvalidRequest, f.key, unmarshalReason(err))
		}
	}
	if v, ok := raw["stop"]; ok && !isNull(v) {
		stop, err := decodeStop(v)
		if err != nil {
			return CompletionRequest{}, err
		}
		r.Stop = stop
	}
	if v, ok := raw["logprobs"]; ok && !isNull(v) {
		var n int
		if err := json.Unmarshal(v, &r.Logprobs); err != nil {
			if json.Unmarshal(v, &n) != nil {
				return CompletionRequest{}, fmt.Errorf("%w: logprobs: want a bool or a count", ErrInvalidRequest)
			}
			r.Logprobs, r.TopLogprobs = true, n
		}
	}
	if v, ok := raw["messages"]; ok && !isNull(v) {
		msgs, err := decodeMessages(v)
		if err != nil {
			return CompletionRequest{}, err
		}
		r.Messages = msgs
	}
	return r, nil
}

// decodeMessages decodes a list of chat messages with case-sensitive keys
// (encoding/json would match struct fields case-insensitively).
func decodeMessages(v json.RawMessage) ([]ChatMessage, error) {
	var items []map[string]json.RawMessage
	if err := json.Unmarshal(v, &items); err != nil {
		return nil, fmt.Errorf("%w: messages: want a list of objects: %v", ErrInvalidRequest, unmarshalReason(err))
	}
	msgs := make([]ChatMessage, len(items))
	for i, it := range items {
		if it == nil {
			return nil, fmt.Errorf("%w: messages[%d]: null", ErrInvalidRequest, i)
		}
		for _, f := range [...]struct {
			key string
			dst *string
		}{{"role", &msgs[i].Role}, {"content", &msgs[i].Content}} {
			fv, ok := it[f.key]
			if !ok || isNull(fv) {
				continue
			}
			if err := json.Unmarshal(fv, f.dst); err != nil {
				return nil, fmt.Errorf("%w: messages[%d].%s: %v", ErrInvalidRequest, i, f.key, unmarshalReason(err))
			}
		}
	}
	return msgs, nil
}

func isNull(v json.RawMessage) bool { return string(bytes.TrimSpace(v)) == "null" }

func unmarshalReason(err error) string {
	if te, ok := err.(*json.UnmarshalTypeError); ok {
		return fmt.Sprintf("got %s, want %s", te.Value, te.Type)
	}
	return err.Error()
}

func decodeStop(v json.RawMessage) ([]string, error) {
	var one string
	if err := json.Unmarshal(v, &one); err == nil {
		return []string{one}, nil
	}
	var list []string
	if err := json.Unmarshal(v, &list); err != nil {
		return nil, fmt.Errorf("%w: stop: want a string or a list of strings", ErrInvalidRequest)
	}
	return list, nil
}

// Validate applies §7.1. The dictionary's errors are returned as the
// sentinels themselves (err.Error() is exactly the dictionary string):
// ErrModelNameRequired (empty model), ErrInvalidModelPath (model containing
// ".."), ErrPromptTooLong (prompt, or all message contents together, over
// MaxPromptChars code points), ErrInvalidMaxTokens (outside
// 1..MaxMaxTokens), ErrTemperatureOutOfRange (outside [0, 2]). Other
// problems wrap ErrInvalidRequest: top_p outside (0, 1], negative top_k,
// neither or both of prompt and messages, a bad message role, an empty stop
// sequence.
func (r CompletionRequest) Validate() error {
	if err := validateModelName(r.Model); err != nil {
		return err
	}
	switch {
	case r.Prompt == "" && len(r.Messages) == 0:
		return fmt.Errorf("%w: prompt or messages required", ErrInvalidRequest)
	case r.Prompt != "" && len(r.Messages) > 0:
		return fmt.Errorf("%w: give prompt or messages, not both", ErrInvalidRequest)
	}
	n := utf8.RuneCountInString(r.Prompt)
	for _, m := range r.Messages {
		n += utf8.RuneCountInString(m.Content)
	}
	if n > MaxPromptChars {
		return ErrPromptTooLong
	}
	if r.MaxTokens < 1 || r.MaxTokens > MaxMaxTokens {
		return ErrInvalidMaxTokens
	}
	if !(r.Temperature >= 0 && r.Temperature <= MaxTemperature) {
		return ErrTemperatureOutOfRange
	}
	if !(r.TopP > 0 && r.TopP <= 1) || math.IsNaN(r.TopP) {
		return fmt.Errorf("%w: top_p %v not in (0, 1]", ErrInvalidRequest, r.TopP)
	}
	if r.TopK < 0 {
		return fmt.Errorf("%w: top_k %d is negative (0 disables top-k)", ErrInvalidRequest, r.TopK)
	}
	for i, m := range r.Messages {
		if err := m.Validate(); err != nil {
			return fmt.Errorf("messages[%d]: %w", i, err)
		}
	}
	for i, s := range r.Stop {
		if s == "" {
			return fmt.Errorf("%w: stop[%d] is empty", ErrInvalidRequest, i)
		}
	}
	if r.TopLogprobs < 0 || r.TopLogprobs > MaxTopLogprobs {
		return fmt.Errorf("%w: top_logprobs %d outside [0, %d]", ErrInvalidRequest, r.TopLogprobs, MaxTopLogprobs)
	}
	if r.TopLogprobs > 0 && !r.Logprobs {
		return fmt.Errorf("%w: top_logprobs needs logprobs", ErrInvalidRequest)
	}
	return nil
}

// CheckContext refuses a request that does not fit a model's context of
// contextLen tokens (its max_position_embeddings, or less where the server
// caps it): a prompt of contextLen tokens or more is "Invalid prompt", and a
// prompt plus max_tokens over contextLen is "Invalid max_tokens" with the
// most max_tokens the prompt leaves as the limit. Both are *LimitError.
func CheckContext(promptTokens, maxTokens, contextLen int) error {
	if promptTokens >= contextLen {
		return RequestLimitError("prompt", promptTokens, contextLen-1,
			fmt.Sprintf("tokens; the model's context is %d tokens, one of them for the completion", contextLen))
	}
	if promptTokens+maxTokens > contextLen {
		return RequestLimitError("max_tokens", maxTokens, contextLen-promptTokens,
			fmt.Sprintf("the prompt's %d tokens plus max_tokens must fit the model's context of %d tokens", promptTokens, contextLen))
	}
	return nil
}

// Object values of CompletionResponse.
const (
	ObjectTextCompletion = "text_completion"
	ObjectChatCompletion = "chat.completion"
)

// Finish reasons of a Choice.
const (
	FinishReasonStop   = "stop"
	FinishReasonLength = "length"
)

// CompletionResponse is the result of a completion request (§3.2), in the
// OpenAI shape.
type CompletionResponse struct {
	ID      string   `json:"id"`
	Object  string   `json:"object"`
	Created int64    `json:"created"`
	Model   string   `json:"model"`
	Choices []Choice `json:"choices"`
	Usage   Usage    `json:"usage"`
}

// Choice is one generated completion. Text is set for text completions,
// Message for chat completions.
type Choice struct {
	Index        int             `json:"index"`
	Text         string          `json:"text"`
	Message      *ChatMessage    `json:"message,omitempty"`
	Logprobs     json.RawMessage `json:"logprobs"`
	FinishReason string          `json:"finish_reason"`
}

// MarshalJSON writes a nil Logprobs as null.
func (c Choice) MarshalJSON() ([]byte, error) {
	type plain Choice
	if len(c.Logprobs) == 0 {
		c.Logprobs = json.RawMessage("null")
	}
	return json.Marshal(plain(c))
}

// Usage counts tokens (§3.4).
type Usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

// RouteResponse is a routing decision (§3.5).
type RouteResponse struct {
	Expert       string        `json:"expert"`
	Confidence   float64       `json:"confidence"`
	Alternatives []Alternative `json:"alternatives"`
}

// Alternative is another expert a router considered.
type Alternative struct {
	Expert     string  `json:"expert"`
	Confidence float64 `json:"confidence"`
}

// Validate checks that an expert is named and confidences are in [0, 1];
// errors wrap ErrInvalidRequest.
func (r RouteResponse) Validate() error {
	if strings.TrimSpace(r.Expert) == "" {
		return fmt.Errorf("%w: route: expert required", ErrInvalidRequest)
	}
	if !finiteIn(r.Confidence, 0, 1) {
		return fmt.Errorf("%w: route: confidence %v not in [0, 1]", ErrInvalidRequest, r.Confidence)
	}
	for i, a := range r.Alternatives {
		if !finiteIn(a.Confidence, 0, 1) {
			return fmt.Errorf("%w: route: alternatives[%d].confidence %v not in [0, 1]", ErrInvalidRequest, i, a.Confidence)
		}
	}
	return nil
}

// Health statuses (§3.6).
const (
	StatusHealthy   = "healthy"
	StatusDegraded  = "degraded"
	StatusUnhealthy = "unhealthy"
)

// HealthResponse reports service health (§3.6).
type HealthResponse struct {
	Status        string      `json:"status"`
	Version       string      `json:"version"`
	UptimeSeconds int64       `json:"uptime_seconds"`
	Components    []Component `json:"components"`
}

// Component is the health of one part of the service.
type Component struct {
	Name    string         `json:"name"`
	Status  string         `json:"status"`
	Message string         `json:"message,omitempty"`
	Details map[string]any `json:"details,omitempty"`
}

// OverallStatus folds component statuses: unhealthy if any is unhealthy,
// else degraded if any is not healthy, else healthy.
func OverallStatus(components []Component) string {
	status := StatusHealthy
	for _, c := range components {
		switch c.Status {
		case StatusHealthy:
		case StatusUnhealthy:
			return StatusUnhealthy
		default:
			status = StatusDegraded
		}
	}
	return status
}
