package resultsink

import (
	"encoding/json"
	"testing"

	"github.com/parquet-go/parquet-go"

	"github.com/largeforge/largeforge/schemas"
)

// result is the successful row of body, as a worker makes it.
func result(t *testing.T, id, kind string, body any) schemas.Result {
	t.Helper()
	r, err := schemas.NewResult("j", id, "m", kind, 1, body)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestRowOf flattens each kind of result into its row: the columns that
// apply set, the others null, and the body for output.jsonl the bytes the
// worker encoded.
func TestRowOf(t *testing.T) {
	margin := 1.5
	dpo := schemas.ScoreOutput{SumLogprob: -2, MeanLogprob: -1, Perplexity: 2.7, Tokens: 2,
		Chosen: &schemas.ScoreOutput{SumLogprob: -2}, Rejected: &schemas.ScoreOutput{SumLogprob: -3.5}, DPOMargin: &margin}
	text := schemas.CompletionResponse{ID: "cmpl-a", Object: schemas.ObjectTextCompletion, Model: "m",
		Choices: []schemas.Choice{{Text: "A <b>", FinishReason: "length"}}}
	chat := schemas.CompletionResponse{ID: "cmpl-1", Object: schemas.ObjectChatCompletion, Model: "m",
		Choices: []schemas.Choice{{Message: &schemas.ChatMessage{Role: schemas.RoleAssistant, Content: "Hi"}, FinishReason: "stop"}},
		Usage:   schemas.Usage{PromptTokens: 3, CompletionTokens: 1, TotalTokens: 4}}
	tests := []struct {
		name     string
		res      schemas.Result
		wantText string // "" : null
		wantSet  []string
		wantBody bool
		wantErr  bool
	}{
		{name: "completion", res: result(t, "a", schemas.KindCompletion, text), wantText: "A <b>",
			wantSet: []string{"prompt_tokens", "completion_tokens", "total_tokens"}, wantBody: true},
		{name: "chat", res: result(t, "b", schemas.KindCompletion, chat), wantText: "Hi",
			wantSet: []string{"prompt_tokens", "completion_tokens", "total_tokens"}, wantBody: true},
		{name: "score", res: result(t, "c", schemas.KindScore, schemas.ScoreOutput{SumLogprob: -4, Tokens: 3}),
			wantSet: []string{"sum_logprob", "mean_logprob", "perplexity", "tokens"}, wantBody: true},
		{name: "dpo score", res: result(t, "d", schemas.KindScore, dpo),
			wantSet: []string{"sum_logprob", "mean_logprob", "perplexity", "tokens", "chosen_logprob", "rejected_logprob", "dpo_margin"}, wantBody: true},
		{name: "error", res: schemas.ErrorResult("j", "e", "m", schemas.KindCompletion, 5, schemas.CodeInvalidRequest, "Invalid max_tokens"),
			wantSet: []string{"error_code", "error"}},
		{name: "score that is no ScoreOutput", res: schemas.Result{Job: "j", CustomID: "f", Kind: schemas.KindScore, Score: json.RawMessage(`{"tokens":"x"}`)},
			wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			row, err := rowOf(tt.res)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			set := map[string]any{"text": row.Text, "finish_reason": row.FinishReason, "prompt_tokens": row.PromptTokens,
				"completion_tokens": row.CompletionTokens, "total_tokens": row.TotalTokens, "sum_logprob": row.SumLogprob,
				"mean_logprob": row.MeanLogprob, "perplexity": row.Perplexity, "tokens": row.Tokens, "chosen_logprob": row.ChosenLogprob,
				"rejected_logprob": row.RejectedLogprob, "dpo_margin": row.DPOMargin, "error_code": row.ErrorCode, "error": row.Error}
			want := map[string]bool{}
			for _, c := range tt.wantSet {
				want[c] = true
			}
			if tt.wantText != "" {
				want["text"], want["finish_reason"] = true, true
			}
			for col, v := range set {
				b, _ := json.Marshal(v)
				if isNull := string(b) == "null"; isNull == want[col] {
					t.Errorf("column %s = %s, want set %v", col, b, want[col])
				}
			}
			if tt.wantText != "" && *row.Text != tt.wantText {
				t.Errorf("text %q, want %q", *row.Text, tt.wantText)
			}
			body := string(tt.res.Response) + string(tt.res.Score)
			if (row.Body != "") != tt.wantBody || row.Body != body {
				t.Errorf("body %s, want the worker's bytes %s", row.Body, body)
			}
		})
	}
}

// TestRowScoreColumns: results.parquet's score columns are
// schemas.ScoreColumns, the `score` command's too.
func TestRowScoreColumns(t *testing.T) {
	cols := map[string]parquet.Field{}
	for _, f := range parquet.SchemaOf(Row{}).Fields() {
		cols[f.Name()] = f
	}
	for _, f := range parquet.SchemaOf(schemas.ScoreColumns{}).Fields() {
		c, ok := cols[f.Name()]
		if !ok || c.Optional() != f.Optional() || c.Type().Kind() != f.Type().Kind() {
			t.Errorf("score column %s (%v, optional %v): results.parquet has %v", f.Name(), f.Type(), f.Optional(), c)
		}
	}
}
