package resultsink

import (
	"encoding/json"

	"github.com/largeforge/largeforge/schemas"
)

// Row is one row of results.parquet (and of the parts it is merged from).
// Its score columns are those of schemas.ScoreColumns, spelled out (see
// there), null where a value does not apply.
type Row struct {
	CustomID         string   `parquet:"custom_id" json:"custom_id"`
	Job              string   `parquet:"job" json:"job"`
	Model            string   `parquet:"model" json:"model"`
	Kind             string   `parquet:"kind" json:"kind"`
	Line             int64    `parquet:"line" json:"line,omitempty"`
	Text             *string  `parquet:"text,optional" json:"text,omitempty"`
	FinishReason     *string  `parquet:"finish_reason,optional" json:"finish_reason,omitempty"`
	PromptTokens     *int64   `parquet:"prompt_tokens,optional" json:"prompt_tokens,omitempty"`
	CompletionTokens *int64   `parquet:"completion_tokens,optional" json:"completion_tokens,omitempty"`
	TotalTokens      *int64   `parquet:"total_tokens,optional" json:"total_tokens,omitempty"`
	LatencyMS        float64  `parquet:"latency_ms" json:"latency_ms"`
	SumLogprob       *float64 `parquet:"sum_logprob,optional" json:"sum_logprob,omitempty"`
	MeanLogprob      *float64 `parquet:"mean_logprob,optional" json:"mean_logprob,omitempty"`
	Perplexity       *float64 `parquet:"perplexity,optional" json:"perplexity,omitempty"`
	Tokens           *int64   `parquet:"tokens,optional" json:"tokens,omitempty"`
	ChosenLogprob    *float64 `parquet:"chosen_logprob,optional" json:"chosen_logprob,omitempty"`
	RejectedLogprob  *float64 `parquet:"rejected_logprob,optional" json:"rejected_logprob,omitempty"`
	DPOMargin        *float64 `parquet:"dpo_margin,optional" json:"dpo_margin,omitempty"`
	ErrorCode        *string  `parquet:"error_code,optional" json:"error_code,omitempty"`
	Error            *string  `parquet:"error,optional" json:"error,omitempty"`
	// Body is the JSON response body of output.jsonl (a CompletionResponse or
	// a ScoreOutput) as the worker encoded it; empty for an error row.
	Body string `parquet:"body" json:"-"`
	// Worker is the worker that produced the row.
	Worker string `parquet:"worker" json:"worker,omitempty"`
}

// Failed reports whether the row is an error row.
func (r Row) Failed() bool { return r.ErrorCode != nil }

func ptr[T any](v T) *T { return &v }

// rowOf flattens a result. The columns of a response or a score are
// decoded from its body; the body itself goes into the row as the worker
// encoded it. A body that does not decode is an error.
func rowOf(r schemas.Result) (Row, error) {
	row := Row{CustomID: r.CustomID, Job: r.Job, Model: r.Model, Kind: r.Kind, Line: int64(r.Line), LatencyMS: r.LatencyMS, Worker: r.Worker}
	switch {
	case r.Error != nil:
		row.ErrorCode, row.Error = ptr(r.Error.Code), ptr(r.Error.Message)
	case r.Response != nil:
		resp, err := r.DecodeResponse()
		if err != nil {
			return Row{}, err
		}
		if len(resp.Choices) > 0 {
			c := resp.Choices[0]
			text := c.Text
			if c.Message != nil {
				text = c.Message.Content
			}
			row.Text, row.FinishReason = ptr(text), ptr(c.FinishReason)
		}
		u := resp.Usage
		row.PromptTokens, row.CompletionTokens, row.TotalTokens = ptr(int64(u.PromptTokens)), ptr(int64(u.CompletionTokens)), ptr(int64(u.TotalTokens))
		row.Body = string(r.Response)
	case r.Score != nil:
		out, err := r.DecodeScore()
		if err != nil {
			return Row{}, err
		}
		c := out.Columns()
		row.SumLogprob, row.MeanLogprob, row.Perplexity, row.Tokens = c.SumLogprob, c.MeanLogprob, c.Perplexity, c.Tokens
		row.ChosenLogprob, row.RejectedLogprob, row.DPOMargin = c.ChosenLogprob, c.RejectedLogprob, c.DPOMargin
		row.Body = string(r.Score)
	}
	return row, nil
}

// outputLine is the row in the OpenAI batch output shape.
func outputLine(r Row) schemas.OutputLine {
	id := "batch_req_" + shortHash(r.Job+"/"+r.CustomID)
	out := schemas.OutputLine{ID: id, CustomID: r.CustomID}
	reqID := "req_" + shortHash("req/"+r.Job+"/"+r.CustomID)
	if r.Failed() {
		e := &schemas.ResultError{Code: *r.ErrorCode, Message: *r.Error}
		out.Error = e
		status := 400
		if e.Code == schemas.CodeDeadLetter {
			status = 500
		}
		body, _ := json.Marshal(map[string]any{"error": map[string]string{"code": e.Code, "message": e.Message}})
		out.Response = &schemas.OutputResponse{StatusCode: status, RequestID: reqID, Body: body}
		return out
	}
	out.Response = &schemas.OutputResponse{StatusCode: 200, RequestID: reqID, Body: json.RawMessage(r.Body)}
	return out
}
