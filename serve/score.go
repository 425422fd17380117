package serve

import (
	"context"

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

// Score scores rows (each valid: schemas.ScoreInput.Validate) in one
// Model.Score call. When that fails the rows run one by one, so that a row
// the model refuses (Refused: too long for its context) or fails on fails
// alone: outs[i] is row i's output when errs[i] is nil.
func Score(ctx context.Context, m *model.Model, tok *tokenizer.Tokenizer, rows []schemas.ScoreInput) (outs []schemas.ScoreOutput, errs []error) {
	outs, errs = make([]schemas.ScoreOutput, len(rows)), make([]error, len(rows))
	var reqs []model.ScoreRequest
	spans := make([][2]int, len(rows))
	for i, r := range rows {
		rs := ScoreRequests(tok, r)
		spans[i] = [2]int{len(reqs), len(reqs) + len(rs)}
		reqs = append(reqs, rs...)
	}
	if len(reqs) == 0 {
		return outs, errs
	}
	res, err := m.Score(ctx, reqs)
	if err != nil && len(rows) > 1 {
		for i := range rows {
			o, e := Score(ctx, m, tok, rows[i:i+1])
			outs[i], errs[i] = o[0], e[0]
		}
		return outs, errs
	}
	for i, r := range rows {
		if err != nil {
			errs[i] = err
			continue
		}
		outs[i] = ScoreOutput(r, res[spans[i][0]:spans[i][1]])
	}
	return outs, errs
}
