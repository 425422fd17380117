// Package serve is the inference adapter: it turns the wire contract's
// requests into the model's and the model's results into the wire contract's
// responses. A schemas.CompletionRequest (a prompt, or chat messages rendered
// with the model's chat_template) becomes a model.TextRequest for a
// TextGenerator or a Batcher, and its model.TextResult a
// schemas.CompletionResponse; a schemas.ScoreInput (text, prompt+completion,
// or prompt+chosen+rejected) becomes model.ScoreRequests, and their results
// one schemas.ScoreOutput. The batch workers, the interactive RPC, `generate`
// and `score` all go through it, so that a chat request, a refusal and a
// score read the same everywhere. It does no I/O.
package serve

import (
	"errors"
	"fmt"
	"time"

	"github.com/largeforge/largeforge/model"
	"github.com/largeforge/largeforge/model/tokenizer"
	"github.com/largeforge/largeforge/schemas"
)

// Prompt is the text the model continues: the request's prompt, or its chat
// messages rendered with the model's chat_template, ready for the
// assistant's reply. A chat request to a model without a chat_template gets
// an error wrapping schemas.ErrInvalidRequest and
// tokenizer.ErrNoChatTemplate, never a template the model was not trained
// with.
func Prompt(tok *tokenizer.Tokenizer, c schemas.CompletionRequest) (string, error) {
	if !c.IsChat() {
		return c.Prompt, nil
	}
	msgs := make([]tokenizer.Message, len(c.Messages))
	for i, m := range c.Messages {
		msgs[i] = tokenizer.Message{Role: m.Role, Content: m.Content}
	}
	p, err := tok.ApplyChatTemplate(msgs, true)
	if err != nil {
		return "", fmt.Errorf("%w: %w", schemas.ErrInvalidRequest, err)
	}
	return p, nil
}

// TextRequest maps a completion request to the model's text request: its
// Prompt, stop strings and sampling parameters, with the request's seed, or
// seed when it has none. Its errors are Prompt's.
func TextRequest(tok *tokenizer.Tokenizer, c schemas.CompletionRequest, seed int64) (model.TextRequest, error) {
	prompt, err := Prompt(tok, c)
	if err != nil {
		return model.TextRequest{}, err
	}
	if c.Seed != nil {
		seed = *c.Seed
	}
	return model.TextRequest{Prompt: prompt, Stop: c.Stop, Params: model.SamplingParams{
		MaxTokens: c.MaxTokens, Temperature: c.Temperature, TopP: c.TopP, TopK: c.TopK, Seed: seed,
		Logprobs: c.Logprobs, TopLogprobs: c.TopLogprobs,
	}}, nil
}

// Response is the CompletionResponse of a generation for request c, under
// the response id and the served model's name: the text as the choice's
// text, or as the assistant's message for a chat request, its finish_reason
// and the usage; the tokens' logprobs when the request asked for them.
func Response(id, modelName string, c schemas.CompletionRequest, out model.TextResult) schemas.CompletionResponse {
	choice := schemas.Choice{Index: 0, Text: out.Text, FinishReason: out.FinishReason, Logprobs: Logprobs(c.IsChat(), out.Logprobs)}
	object := schemas.ObjectTextCompletion
	if c.IsChat() {
		object = schemas.ObjectChatCompletion
		choice.Text = ""
		choice.Message = &schemas.ChatMessage{Role: schemas.RoleAssistant, Content: out.Text}
	}
	return schemas.CompletionResponse{ID: id, Object: object, Created: time.Now().Unix(), Model: modelName,
		Choices: []schemas.Choice{choice},
		Usage: schemas.Usage{PromptTokens: out.PromptTokens, CompletionTokens: out.CompletionTokens,
			TotalTokens: out.PromptTokens + out.CompletionTokens}}
}

// Refused reports whether the model refused a request (too long for its
// context, or otherwise not one it can run) rather than failed: the request
// gets an answer saying why, and is not retried.
func Refused(err error) bool {
	return errors.Is(err, model.ErrTooLong) || errors.Is(err, model.ErrInvalidRequest)
}
