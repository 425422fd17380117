package gateway

import (
	"encoding/json"

	"github.com/largeforge/largeforge/schemas"
)

// The response shapes OpenAI's clients read, where schemas' §3 types carry
// more than OpenAI sends.

// chatCompletion is a non-streamed chat completion as OpenAI writes it: its
// choices carry a message and no text.
type chatCompletion struct {
	ID      string        `json:"id"`
	Object  string        `json:"object"`
	Created int64         `json:"created"`
	Model   string        `json:"model"`
	Choices []chatChoice  `json:"choices"`
	Usage   schemas.Usage `json:"usage"`
}

type chatChoice struct {
	Index        int                  `json:"index"`
	Message      *schemas.ChatMessage `json:"message"`
	Logprobs     json.RawMessage      `json:"logprobs"`
	FinishReason string               `json:"finish_reason"`
}

// chatCompletionOf is resp (a chat request's) without the text of its
// choices; a nil Logprobs is written as null.
func chatCompletionOf(resp schemas.CompletionResponse) chatCompletion {
	out := chatCompletion{ID: resp.ID, Object: resp.Object, Created: resp.Created, Model: resp.Model,
		Choices: make([]chatChoice, len(resp.Choices)), Usage: resp.Usage}
	for i, c := range resp.Choices {
		lp := c.Logprobs
		if len(lp) == 0 {
			lp = json.RawMessage("null")
		}
		out.Choices[i] = chatChoice{Index: c.Index, Message: c.Message, Logprobs: lp, FinishReason: c.FinishReason}
	}
	return out
}

// MarshalJSON writes "usage": null on a chunk without usage when UsageNull
// is set: with stream_options.include_usage every chunk but the last carries
// a null usage (OpenAI's stream_options).
func (c StreamChunk) MarshalJSON() ([]byte, error) {
	type plain StreamChunk
	if c.Usage != nil || !c.UsageNull {
		return json.Marshal(plain(c))
	}
	return json.Marshal(struct {
		plain
		Usage *schemas.Usage `json:"usage"`
	}{plain: plain(c)})
}
