package serve

import (
	"encoding/json"

	"github.com/largeforge/largeforge/model"
)

// ChatLogprobs is a chat choice's logprobs in OpenAI's shape: one entry per
// generated token.
type ChatLogprobs struct {
	Content []ChatTokenLogprob `json:"content"`
	Refusal []ChatTokenLogprob `json:"refusal"`
}

// ChatTokenLogprob is a token, its log-probability, its UTF-8 bytes and the
// most likely tokens at its position (an empty list unless top_logprobs).
type ChatTokenLogprob struct {
	Token       string           `json:"token"`
	Logprob     float64          `json:"logprob"`
	Bytes       []int            `json:"bytes"`
	TopLogprobs []ChatTopLogprob `json:"top_logprobs"`
}

// ChatTopLogprob is one alternative of a ChatTokenLogprob.
type ChatTopLogprob struct {
	Token   string  `json:"token"`
	Logprob float64 `json:"logprob"`
	Bytes   []int   `json:"bytes"`
}

// CompletionLogprobs is a text completion choice's logprobs in OpenAI's
// legacy shape: parallel lists, and the alternatives as token → logprob.
type CompletionLogprobs struct {
	Tokens        []string             `json:"tokens"`
	TokenLogprobs []float64            `json:"token_logprobs"`
	TopLogprobs   []map[string]float64 `json:"top_logprobs"`
	TextOffset    []int                `json:"text_offset"`
}

// tokenBytes is OpenAI's bytes of a token: raw (the token's own bytes,
// which may be part of a character) when the model gave them, else its text's.
func tokenBytes(raw []byte, text string) []int {
	if raw == nil {
		raw = []byte(text)
	}
	b := make([]int, len(raw))
	for i, c := range raw {
		b[i] = int(c)
	}
	return b
}

// Logprobs is the logprobs object of a choice for lps (nil without them):
// ChatLogprobs for a chat request, else CompletionLogprobs.
func Logprobs(chat bool, lps []model.TokenLogprob) json.RawMessage {
	if lps == nil {
		return nil
	}
	var v any
	if chat {
		c := ChatLogprobs{Content: make([]ChatTokenLogprob, len(lps))}
		for i, lp := range lps {
			t := ChatTokenLogprob{Token: lp.Token, Logprob: lp.Logprob, Bytes: tokenBytes(lp.Bytes, lp.Token), TopLogprobs: []ChatTopLogprob{}}
			for _, a := range lp.Top {
				t.TopLogprobs = append(t.TopLogprobs, ChatTopLogprob{Token: a.Token, Logprob: a.Logprob, Bytes: tokenBytes(a.Bytes, a.Token)})
			}
			c.Content[i] = t
		}
		v = c
	} else {
		c := CompletionLogprobs{Tokens: []string{}, TokenLogprobs: []float64{}, TopLogprobs: []map[string]float64{}, TextOffset: []int{}}
		off := 0
		for _, lp := range lps {
			c.Tokens = append(c.Tokens, lp.Token)
			c.TokenLogprobs = append(c.TokenLogprobs, lp.Logprob)
			c.TextOffset = append(c.TextOffset, off)
			off += len(lp.Token)
			top := map[string]float64{}
			for _, a := range lp.Top {
				if _, dup := top[a.Token]; !dup {
					top[a.Token] = a.Logprob
				}
			}
			c.TopLogprobs = append(c.TopLogprobs, top)
		}
		v = c
	}
	data, _ := json.Marshal(v)
	return data
}
