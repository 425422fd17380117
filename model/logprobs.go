package model

import (
	"fmt"
	"math"
)

// MaxTopLogprobs is the most alternatives SamplingParams.TopLogprobs may ask
// for (OpenAI's limit).
const MaxTopLogprobs = 20

// TokenLogprob is the log-probability of a generated token under the model
// (the log-softmax of its logits, before temperature, top-k and top-p), with
// the most likely tokens at that position when asked for. Token is its text
// (set by TextGenerator, "" from Model.Generate), always valid UTF-8; Bytes
// are its bytes as they are (set by TextGenerator): a token holding part of
// a character has the Token "\ufffd" and that part in Bytes.
type TokenLogprob struct {
	ID      int
	Token   string
	Bytes   []byte
	Logprob float64
	Top     []TopLogprob
}

// TopLogprob is one of the most likely tokens at a position.
type TopLogprob struct {
	ID      int
	Token   string
	Bytes   []byte
	Logprob float64
}

// validateLogprobs checks the logprob parameters of p.
func (p SamplingParams) validateLogprobs() error {
	switch {
	case p.TopLogprobs < 0 || p.TopLogprobs > MaxTopLogprobs:
		return fmt.Errorf("%w: top_logprobs %d outside [0, %d]", ErrInvalidRequest, p.TopLogprobs, MaxTopLogprobs)
	case p.TopLogprobs > 0 && !p.Logprobs:
		return fmt.Errorf("%w: top_logprobs needs logprobs", ErrInvalidRequest)
	}
	return nil
}

// logprobOf is the TokenLogprob of token id under logits, with the top most
// likely tokens (most likely first, ties by id).
func logprobOf(logits []float32, id, top int) TokenLogprob {
	hi := float64(logits[argmax(logits)])
	sum := 0.0
	for _, l := range logits {
		sum += math.Exp(float64(l) - hi)
	}
	lse := hi + math.Log(sum)
	out := TokenLogprob{ID: id, Logprob: float64(logits[id]) - lse}
	if top == 0 {
		return out
	}
	best := make([]TopLogprob, 0, top+1)
	for i, l := range logits {
		lp := float64(l) - lse
		if len(best) == top && lp <= best[top-1].Logprob {
			continue
		}
		j := len(best)
		for j > 0 && best[j-1].Logprob < lp {
			j--
		}
		best = append(best, TopLogprob{})
		copy(best[j+1:], best[j:])
		best[j] = TopLogprob{ID: i, Logprob: lp}
		if len(best) > top {
			best = best[:top]
		}
	}
	out.Top = best
	return out
}

// logprobs returns the logprobs of the first n drawn tokens (those a
// tracker kept), nil unless SamplingParams.Logprobs.
func (s *sampler) logprobs(n int) []TokenLogprob {
	if !s.p.Logprobs {
		return nil
	}
	return s.rec[:min(n, len(s.rec))]
}
