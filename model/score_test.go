package model

import (
	"context"
	"math"
	"testing"
)

func TestLogitsMatchReference(t *testing.T) {
	m, ref := storiesModel(t)
	var rows [][]int
	for _, p := range ref.Prompts {
		rows = append(rows, append(append([]int{}, p.PromptIDs...), p.GreedyIDs...))
	}
	logits, err := m.Logits(context.Background(), rows)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range ref.Prompts {
		for _, st := range p.FirstSteps {
			got := logits[i][st.Position]
			worst := 0.0
			for k, want := range st.Logits {
				worst = max(worst, math.Abs(float64(got[k])-want))
			}
			if worst > 1e-4 {
				t.Errorf("prompt %q position %d: max |logit - reference| = %g, want <= 1e-4", p.Prompt, st.Position, worst)
			}
			if a := argmax(got); a != st.NextToken {
				t.Errorf("prompt %q position %d: argmax %d, want %d", p.Prompt, st.Position, a, st.NextToken)
			}
		}
	}
}

func TestScoreMatchesReference(t *testing.T) {
	m, ref := storiesModel(t)
	var reqs []ScoreRequest
	for _, p := range ref.Prompts {
		reqs = append(reqs, ScoreRequest{PromptIDs: p.PromptIDs, CompletionIDs: p.GreedyIDs})
	}
	res, err := m.Score(context.Background(), reqs)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range ref.Prompts {
		r := res[i]
		if r.Tokens != len(p.GreedyIDs) || len(r.TokenLogprobs) != r.Tokens {
			t.Errorf("prompt %q: %d tokens (%d logprobs), want %d", p.Prompt, r.Tokens, len(r.TokenLogprobs), len(p.GreedyIDs))
		}
		if d := math.Abs(r.SumLogprob - p.SumLogprob64); d > 1e-3 {
			t.Errorf("prompt %q: sum logprob %.6f, reference %.6f (diff %g)", p.Prompt, r.SumLogprob, p.SumLogprob64, d)
		}
		if math.Abs(r.MeanLogprob*float64(r.Tokens)-r.SumLogprob) > 1e-9 || math.Abs(r.Perplexity-math.Exp(-r.MeanLogprob)) > 1e-9 {
			t.Errorf("prompt %q: inconsistent mean %g / perplexity %g", p.Prompt, r.MeanLogprob, r.Perplexity)
		}
	}
}
