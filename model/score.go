package model

import (
	"context"
	"fmt"
	"math"

	"github.com/gomlx/gomlx/pkg/core/dtypes"
	. "github.com/gomlx/gomlx/pkg/core/graph" //nolint:revive,staticcheck // the GoMLX convention for graph code
)

// ScoreRequest is one row to score: the log-probabilities of CompletionIDs
// given PromptIDs. With an empty prompt every token after the first counts.
type ScoreRequest struct {
	PromptIDs, CompletionIDs []int
}

// ScoreResult holds the per-token log-probabilities of the counted tokens,
// their sum and mean, and the perplexity exp(-mean).
type ScoreResult struct {
	TokenLogprobs []float64
	SumLogprob    float64
	MeanLogprob   float64
	Perplexity    float64
	Tokens        int
}

// DPOMargin is logp(chosen) - logp(rejected), the implicit reward margin
// of a DPO preference row scored as two prompt+completion rows.
func DPOMargin(chosen, rejected ScoreResult) float64 {
	return chosen.SumLogprob - rejected.SumLogprob
}

// checkIDs rejects token ids outside the vocabulary.
func (m *Model) checkIDs(what string, ids []int) error {
	for _, id := range ids {
		if id < 0 || id >= m.cfg.VocabSize {
			return fmt.Errorf("%w: %s token id %d outside the vocabulary [0, %d)", ErrInvalidRequest, what, id, m.cfg.VocabSize)
		}
	}
	return nil
}

// Logits recomputes the full logits [row][position][vocab] of each row (no
// KV cache). Rows may have different lengths; they run as one right-padded
// batch (split at the maximum batch size).
func (m *Model) Logits(ctx context.Context, ids [][]int) ([][][]float32, error) {
	for i, row := range ids {
		if len(row) == 0 {
			return nil, fmt.Errorf("%w: row %d is empty", ErrInvalidRequest, i)
		}
		if len(row) > m.maxSeq {
			return nil, fmt.Errorf("%w: row %d has %d tokens, the context is %d", ErrTooLong, i, len(row), m.maxSeq)
		}
		if err := m.checkIDs("row", row); err != nil {
			return nil, err
		}
	}
	out := make([][][]float32, len(ids))
	v := m.cfg.VocabSize
	step := m.chunkRows(ids)
	for lo := 0; lo < len(ids); lo += step {
		rows := ids[lo:min(lo+step, len(ids))]
		b, s := m.padDims(rows)
		toks := make([]int32, b*s)
		for i, row := range rows {
			for j, id := range row {
				toks[i*s+j] = int32(id)
			}
		}
		res, err := m.run(ctx, graphKey{kind: "forward", a: b, b: s}, true, func(g *Graph, w *Weights) []*Node {
			t := param(g, "tokens", dtypes.Int32, b, s)
			return []*Node{Forward(m.cfg, w, t)}
		}, m.ints(toks, b, s))
		if err != nil {
			return nil, err
		}
		flat, err := float32s(res[0])
		if err != nil {
			return nil, err
		}
		for i, row := range rows {
			r := make([][]float32, len(row))
			for j := range row {
				off := (i*s + j) * v
				r[j] = flat[off : off+v : off+v]
			}
			out[lo+i] = r
		}
	}
	return out, nil
}

// maxLogits bounds the logits [B, S, vocab] one full forward pass holds.
const maxLogits = 1 << 26

// chunkRows is how many rows run together in a full forward pass: at most
// the maximum batch, and few enough that their logits stay under maxLogits.
func (m *Model) chunkRows(rows [][]int) int {
	_, s := m.padDims(rows)
	n := m.opts.maxBatch
	for n > 1 && pow2(n, 1)*s*m.cfg.VocabSize > maxLogits {
		n /= 2
	}
	return n
}

// padDims buckets a batch of rows to power-of-two batch and length.
func (m *Model) padDims(rows [][]int) (b, s int) {
	longest := 1
	for _, r := range rows {
		longest = max(longest, len(r))
	}
	return pow2(len(rows), 1), min(pow2(longest, 8), max(m.maxSeq, longest))
}

// Score computes the log-probabilities of each request's completion tokens
// given its prompt, batched. Only completion tokens count (all tokens after
// the first when the prompt is empty).
func (m *Model) Score(ctx context.Context, reqs []ScoreRequest) ([]ScoreResult, error) {
	return m.ScoreAdapted(ctx, nil, reqs)
}

// ScoreAdapted is Score with the LoRA adapter a (loaded for m by
// LoadAdapter; nil: the base alone).
func (m *Model) ScoreAdapted(ctx context.Context, a *Adapter, reqs []ScoreRequest) ([]ScoreResult, error) {
	if err := m.checkAdapter(a); err != nil {
		return nil, err
	}
	rows := make([][]int, len(reqs))
	for i, r := range reqs {
		row := append(append(make([]int, 0, len(r.PromptIDs)+len(r.CompletionIDs)), r.PromptIDs...), r.CompletionIDs...)
		switch {
		case len(row) < 2:
			return nil, fmt.Errorf("%w: score row %d has %d tokens, need at least 2", ErrInvalidRequest, i, len(row))
		case len(row) > m.maxSeq:
			return nil, fmt.Errorf("%w: score row %d has %d tokens, the context is %d", ErrTooLong, i, len(row), m.maxSeq)
		case len(r.CompletionIDs) == 0:
			return nil, fmt.Errorf("%w: score row %d has no completion tokens", ErrInvalidRequest, i)
		}
		if err := m.checkIDs("score", row); err != nil {
			return nil, err
		}
		rows[i] = row
	}
	out := make([]ScoreResult, len(reqs))
	step := m.chunkRows(rows)
	for lo := 0; lo < len(rows); lo += step {
		batch := rows[lo:min(lo+step, len(rows))]
		if m.native != nil && m.engine == EngineNative {
			first := make([]int, len(batch))
			for i := range batch {
				first[i] = max(len(reqs[lo+i].PromptIDs), 1)
			}
			lps, err := m.native.tokenLogprobs(ctx, m, batch, first, a)
			if err != nil {
				return nil, err
			}
			for i, lp := range lps {
				out[lo+i] = scoreResult(lp)
			}
			continue
		}
		b, s := m.padDims(batch)
		toks := make([]int32, b*s)
		next := make([]int32, b*s)
		for i, row := range batch {
			for j, id := range row {
				toks[i*s+j] = int32(id)
				if j > 0 {
					next[i*s+j-1] = int32(id)
				}
			}
		}
		res, err := m.run(ctx, graphKey{kind: "score", a: b, b: s}, true, func(g *Graph, w *Weights) []*Node {
			t := param(g, "tokens", dtypes.Int32, b, s)
			n := param(g, "next", dtypes.Int32, b, s)
			return []*Node{tokenLogprobs(Forward(m.cfg, w, t), n)}
		}, m.ints(toks, b, s), m.ints(next, b, s))
		if err != nil {
			return nil, err
		}
		lp, err := float32s(res[0])
		if err != nil {
			return nil, err
		}
		for i, row := range batch {
			first := max(len(reqs[lo+i].PromptIDs), 1)
			lps := make([]float64, 0, len(row)-first)
			for j := first; j < len(row); j++ {
				lps = append(lps, float64(lp[i*s+j-1]))
			}
			out[lo+i] = scoreResult(lps)
		}
	}
	return out, nil
}

// scoreResult sums a row's token log-probabilities.
func scoreResult(lps []float64) ScoreResult {
	r := ScoreResult{TokenLogprobs: lps, Tokens: len(lps)}
	for _, x := range lps {
		r.SumLogprob += x
	}
	r.MeanLogprob = r.SumLogprob / float64(r.Tokens)
	r.Perplexity = math.Exp(-r.MeanLogprob)
	return r
}

// tokenLogprobs is log softmax(logits)[next] for logits [B, S, V] and next [B, S].
func tokenLogprobs(logits, next *Node) *Node {
	v := logits.Shape().Dim(-1)
	mx := StopGradient(ReduceAndKeep(logits, ReduceMax, -1))
	shifted := Sub(logits, mx)
	lse := Log(ReduceSum(Exp(shifted), -1))
	picked := ReduceSum(Mul(shifted, OneHot(next, v, logits.DType())), -1)
	return Sub(picked, lse)
}
