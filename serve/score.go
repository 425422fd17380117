package serve

import (
	"context"
	"fmt"
	"time"

	"github.com/largeforge/largeforge/model"
	"github.com/largeforge/largeforge/model/tokenizer"
	"github.com/largeforge/largeforge/schemas"
)

// ScoreRequests tokenizes a score row into the model's requests: the text
// (every token after the first counts), the completion after its prompt, or
// for a DPO row the chosen and then the rejected completion after the prompt.
func ScoreRequests(tok *tokenizer.Tokenizer, s schemas.ScoreInput) []model.ScoreRequest {
	switch {
	case s.IsDPO():
		return []model.ScoreRequest{model.ScorePair(tok, s.Prompt, s.Chosen), model.ScorePair(tok, s.Prompt, s.Rejected)}
	case s.Text != "":
		return []model.ScoreRequest{{CompletionIDs: tok.Encode(s.Text, true)}}
	default:
		return []model.ScoreRequest{model.ScorePair(tok, s.Prompt, s.Completion)}
	}
}

// ScoreOutput is the output of a score row from the results of its
// ScoreRequests: the scores of its text or completion, or for a DPO row
// those of the chosen completion, both completions' and their margin.
func ScoreOutput(s schemas.ScoreInput, rs []model.ScoreResult) schemas.ScoreOutput {
	out := scoreOutput(rs[0])
	if s.IsDPO() {
		margin := model.DPOMargin(rs[0], rs[1])
		chosen, rejected := scoreOutput(rs[0]), scoreOutput(rs[1])
		out.Chosen, out.Rejected, out.DPOMargin = &chosen, &rejected, &margin
	}
	return out
}

func scoreOutput(r model.ScoreResult) schemas.ScoreOutput {
	return schemas.ScoreOutput{SumLogprob: r.SumLogprob, MeanLogprob: r.MeanLogprob, Perplexity: r.Perplexity, Tokens: r.Tokens}
}

// ScoreRate is what a Score call ran through the model: the rows scored,
// their tokens (every prompt and completion token of every request, the
// positions the model computes), and the time the call took.
type ScoreRate struct {
	Rows, Tokens int
	Elapsed      time.Duration
}

// Add counts another call's rows, tokens and time.
func (r *ScoreRate) Add(o ScoreRate) {
	r.Rows += o.Rows
	r.Tokens += o.Tokens
	r.Elapsed += o.Elapsed
}

// RowsPerSecond is the rows scored per second, 0 when no time was counted.
func (r ScoreRate) RowsPerSecond() float64 { return perSecond(r.Rows, r.Elapsed) }

// TokensPerSecond is the tokens run through the model per second, 0 when no time was counted.
func (r ScoreRate) TokensPerSecond() float64 { return perSecond(r.Tokens, r.Elapsed) }

func perSecond(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// String reads "R rows, T tokens in 1.23s: x rows/s, y tokens/s".
func (r ScoreRate) String() string {
	return fmt.Sprintf("%d rows, %d tokens in %.2fs: %.1f rows/s, %.0f tokens/s",
		r.Rows, r.Tokens, r.Elapsed.Seconds(), r.RowsPerSecond(), r.TokensPerSecond())
}

// Score scores rows (each valid: schemas.ScoreInput.Validate) in one
// Model.Score call. When that fails the rows run one by one, so that a row
// the model refuses (Refused: too long for its context) or fails on fails
// alone: outs[i] is row i's output when errs[i] is nil.
func Score(ctx context.Context, m *model.Model, tok *tokenizer.Tokenizer, rows []schemas.ScoreInput) (outs []schemas.ScoreOutput, errs []error) {
	outs, errs, _ = ScoreRated(ctx, m, tok, rows)
	return outs, errs
}

// Scorer scores token rows: a *model.Model, or a *model.Adapter on its base.
type Scorer interface {
	Score(ctx context.Context, reqs []model.ScoreRequest) ([]model.ScoreResult, error)
}

// ScoreRated is Score, with the rate of the rows it scored, on any Scorer.
func ScoreRated(ctx context.Context, m Scorer, tok *tokenizer.Tokenizer, rows []schemas.ScoreInput) (outs []schemas.ScoreOutput, errs []error, rate ScoreRate) {
	start := time.Now()
	outs, errs = make([]schemas.ScoreOutput, len(rows)), make([]error, len(rows))
	var reqs []model.ScoreRequest
	spans := make([][2]int, len(rows))
	for i, r := range rows {
		rs := ScoreRequests(tok, r)
		spans[i] = [2]int{len(reqs), len(reqs) + len(rs)}
		reqs = append(reqs, rs...)
	}
	if len(reqs) == 0 {
		return outs, errs, rate
	}
	res, err := m.Score(ctx, reqs)
	if err != nil && len(rows) > 1 {
		for i := range rows {
			o, e, r := ScoreRated(ctx, m, tok, rows[i:i+1])
			outs[i], errs[i] = o[0], e[0]
			rate.Rows += r.Rows
			rate.Tokens += r.Tokens
		}
		rate.Elapsed = time.Since(start)
		return outs, errs, rate
	}
	for i, r := range rows {
		if err != nil {
			errs[i] = err
			continue
		}
		outs[i] = ScoreOutput(r, res[spans[i][0]:spans[i][1]])
		rate.Rows++
		for _, q := range reqs[spans[i][0]:spans[i][1]] {
			rate.Tokens += len(q.PromptIDs) + len(q.CompletionIDs)
		}
	}
	rate.Elapsed = time.Since(start)
	return outs, errs, rate
}
