package model

import (
	"context"
	"fmt"

	"github.com/largeforge/largeforge/schemas"
)

// GenerateRequest is one prompt (token ids, BOS included if wanted) and its
// sampling parameters.
type GenerateRequest struct {
	PromptIDs []int
	Params    SamplingParams
	// Adapter, when not nil, is the LoRA adapter (LoadAdapter, for this
	// model) the request runs with, unmerged (lora.go).
	Adapter *Adapter
}

// GenerateResult is a completion: its token ids (EOS and stop sequences
// cut), the finish reason ("stop" or "length") and usage counts.
// CompletionTokens counts every token the model produced, a final EOS or
// stop sequence included.
type GenerateResult struct {
	IDs              []int
	FinishReason     string
	PromptTokens     int
	CompletionTokens int
	// Logprobs, with SamplingParams.Logprobs, holds one entry per id of IDs.
	Logprobs []TokenLogprob
}

// validateRequest checks a request and returns the most tokens it may
// produce. A prompt plus max_tokens over the context (max_position_embeddings,
// or the WithMaxSeqLen cap) is refused, matching ErrTooLong, with the
// schemas.LimitError of the field over its limit.
func (m *Model) validateRequest(r GenerateRequest) (limit int, err error) {
	if len(r.PromptIDs) == 0 {
		return 0, fmt.Errorf("%w: empty prompt", ErrInvalidRequest)
	}
	if err := m.checkIDs("prompt", r.PromptIDs); err != nil {
		return 0, err
	}
	if err := r.Params.Validate(); err != nil {
		return 0, err
	}
	if err := m.checkAdapter(r.Adapter); err != nil {
		return 0, err
	}
	limit = r.Params.MaxTokens
	if limit == 0 {
		limit = DefaultMaxTokens
	}
	if err := schemas.CheckContext(len(r.PromptIDs), limit, m.maxSeq); err != nil {
		return 0, contextError{err}
	}
	return limit, nil
}

// contextError is a request that does not fit the context: it matches
// ErrTooLong and unwraps to the *schemas.LimitError that names the field
// over its limit ("Invalid max_tokens", "Invalid prompt").
type contextError struct{ err error }

func (e contextError) Error() string        { return e.err.Error() }
func (e contextError) Is(target error) bool { return target == ErrTooLong }
func (e contextError) Unwrap() error        { return e.err }

func (m *Model) eos() []int {
	if len(m.gen.EOSTokenIDs) > 0 {
		return m.gen.EOSTokenIDs
	}
	return m.cfg.EOSTokenIDs
}

// Generate completes a batch of requests: the prompts (of any lengths) are
// prefilled together, then decoded one token per step with a KV cache.
// Batches larger than the maximum batch size are run in turns.
func (m *Model) Generate(ctx context.Context, reqs []GenerateRequest) ([]GenerateResult, error) {
	limits := make([]int, len(reqs))
	for i, r := range reqs {
		l, err := m.validateRequest(r)
		if err != nil {
			return nil, fmt.Errorf("request %d: %w", i, err)
		}
		limits[i] = l
	}
	out := make([]GenerateResult, len(reqs))
	for lo := 0; lo < len(reqs); lo += m.opts.maxBatch {
		hi := min(lo+m.opts.maxBatch, len(reqs))
		if err := m.generateBatch(ctx, reqs[lo:hi], limits[lo:hi], out[lo:hi]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (m *Model) generateBatch(ctx context.Context, reqs []GenerateRequest, limits []int, out []GenerateResult) error {
	n := len(reqs)
	need := 1
	prompts := make([][]int, n)
	for i, r := range reqs {
		prompts[i] = r.PromptIDs
		need = max(need, len(r.PromptIDs)+limits[i]-1)
	}
	b := pow2(n, 1)
	st := m.newKVState(b, bucketLen(need, m.maxSeq))
	defer st.release()
	slots := make([]int, n)
	trackers := make([]*tracker, n)
	samplers := make([]*sampler, n)
	for i, r := range reqs {
		slots[i] = i
		setAdapter(st, i, r.Adapter)
		trackers[i] = newTracker(r.Params, m.eos(), limits[i])
		samplers[i] = newSampler(r.Params)
	}
	logits, err := st.prefill(ctx, slots, prompts)
	if err != nil {
		return err
	}
	tokens := make([]int, b)
	pos := make([]int, b)
	active := n
	for i := range n {
		id := samplers[i].next(logits[i])
		if trackers[i].add(id) {
			active--
		} else {
			tokens[i], pos[i] = id, len(prompts[i])
		}
	}
	for active > 0 {
		rows, err := st.step(ctx, tokens, pos)
		if err != nil {
			return err
		}
		for i := range n {
			if trackers[i].finish != "" {
				tokens[i], pos[i] = 0, 0
				continue
			}
			id := samplers[i].next(rows[i])
			if trackers[i].add(id) {
				active--
				tokens[i], pos[i] = 0, 0
			} else {
				tokens[i] = id
				pos[i]++
			}
		}
	}
	for i, t := range trackers {
		out[i] = GenerateResult{
			IDs:              t.ids,
			FinishReason:     t.finish,
			PromptTokens:     len(prompts[i]),
			CompletionTokens: t.produced,
			Logprobs:         samplers[i].logprobs(len(t.ids)),
		}
	}
	return nil
}

// bucketLen rounds a cache length up to a power of two (at least 16), at
// most the context length.
func bucketLen(n, maxSeq int) int {
	return min(pow2(n, 16), max(maxSeq, n))
}
