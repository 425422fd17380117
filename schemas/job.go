package schemas

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Kinds of job: a Request carries a completion or a score body; training
// jobs travel as their own messages (lf.train.<job>).
const (
	KindCompletion = "completion"
	KindScore      = "score"
	KindTraining   = "training"
)

// MaxJobIDLen bounds a job id in bytes.
const MaxJobIDLen = 128

// ValidJobID checks that id can be a KV key and a subject token: 1 to
// MaxJobIDLen letters, digits, '-' and '_'. Its errors carry no sentinel:
// callers wrap them in theirs (ErrBadMessage here, the jobs package's
// ErrInvalidOption for a job spec).
func ValidJobID(id string) error {
	if id == "" || len(id) > MaxJobIDLen {
		return fmt.Errorf("job id %q: want 1 to %d characters", id, MaxJobIDLen)
	}
	if i := strings.IndexFunc(id, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_')
	}); i >= 0 {
		return fmt.Errorf("job id %q: only letters, digits, '-' and '_'", id)
	}
	return nil
}

// MaxCustomIDLen bounds a custom_id in bytes.
const MaxCustomIDLen = 512

// ValidCustomID checks a custom_id: 1 to MaxCustomIDLen bytes of valid UTF-8
// without control characters (it travels in the Nats-Msg-Id header).
func ValidCustomID(id string) error {
	if id == "" || len(id) > MaxCustomIDLen || !utf8.ValidString(id) {
		return fmt.Errorf("%w: custom_id must be 1 to %d bytes of UTF-8", ErrBadMessage, MaxCustomIDLen)
	}
	if strings.IndexFunc(id, unicode.IsControl) >= 0 {
		return fmt.Errorf("%w: custom_id %q has a control character", ErrBadMessage, id)
	}
	return nil
}

// MsgID is the Nats-Msg-Id of a job's request and of its result.
func MsgID(job, customID string) string { return job + "/" + customID }

// ScoreInput is one row of a scoring job: Text alone (every token after the
// first is scored), Prompt and Completion, or Prompt, Chosen and Rejected (a
// DPO row: both completions are scored and their margin reported).
type ScoreInput struct {
	Text       string `json:"text,omitempty"`
	Prompt     string `json:"prompt,omitempty"`
	Completion string `json:"completion,omitempty"`
	Chosen     string `json:"chosen,omitempty"`
	Rejected   string `json:"rejected,omitempty"`
}

// IsDPO reports whether the row is a preference pair.
func (s ScoreInput) IsDPO() bool { return s.Chosen != "" || s.Rejected != "" }

// Validate checks that the row has exactly one of the three shapes and
// applies the prompt length limit of §7.1 ("Prompt too long").
func (s ScoreInput) Validate() error {
	n := utf8.RuneCountInString(s.Text) + utf8.RuneCountInString(s.Prompt) +
		utf8.RuneCountInString(s.Completion) + utf8.RuneCountInString(s.Chosen) + utf8.RuneCountInString(s.Rejected)
	if n > MaxPromptChars {
		return ErrPromptTooLong
	}
	switch {
	case s.Text != "" && s.Prompt == "" && s.Completion == "" && !s.IsDPO():
		return nil
	case s.Text == "" && s.Completion != "" && !s.IsDPO():
		return nil
	case s.Text == "" && s.Completion == "" && s.Chosen != "" && s.Rejected != "":
		return nil
	}
	return fmt.Errorf("%w: a score row has text, or prompt and completion, or prompt, chosen and rejected", ErrInvalidRequest)
}

// Request is one request of a job, published on lf.req.<job>.<model> with
// Nats-Msg-Id MsgID(job, custom_id). Completion is set for completion jobs,
// Score for scoring jobs.
type Request struct {
	Job        string             `json:"job"`
	CustomID   string             `json:"custom_id"`
	Kind       string             `json:"kind"`
	Model      string             `json:"model"`
	Line       int                `json:"line,omitempty"` // 1-based row of the input file
	Completion *CompletionRequest `json:"completion,omitempty"`
	Score      *ScoreInput        `json:"score,omitempty"`
}

// Validate checks a decoded request: ids, kind, and the body's own rules.
func (r Request) Validate() error {
	if err := ValidJobID(r.Job); err != nil {
		return fmt.Errorf("%w: job: %w", ErrBadMessage, err)
	}
	if err := ValidCustomID(r.CustomID); err != nil {
		return err
	}
	switch r.Kind {
	case KindCompletion:
		if r.Completion == nil || r.Score != nil {
			return fmt.Errorf("%w: a completion request carries a completion body only", ErrBadMessage)
		}
		return r.Completion.Validate()
	case KindScore:
		if r.Score == nil || r.Completion != nil {
			return fmt.Errorf("%w: a score request carries a score body only", ErrBadMessage)
		}
		return r.Score.Validate()
	}
	return fmt.Errorf("%w: kind %q", ErrBadMessage, r.Kind)
}

// DecodeRequest decodes a Request message and validates it. A message that is
// not a Request at all wraps ErrBadMessage; one whose body breaks the
// dictionary's rules returns the schemas error (for example
// ErrInvalidMaxTokens) together with the request as far as it was
// decoded (its Job and CustomID say where the error row goes).
func DecodeRequest(data []byte) (Request, error) {
	var w struct {
		Request
		Completion json.RawMessage `json:"completion,omitempty"`
	}
	if err := strictUnmarshal(data, &w); err != nil {
		return Request{}, fmt.Errorf("%w: request: %v", ErrBadMessage, err)
	}
	r := w.Request
	if len(w.Completion) > 0 && string(w.Completion) != "null" {
		// The dictionary's decoder: absent fields get the §3.1 defaults.
		c, err := DecodeCompletionRequest(w.Completion)
		if err != nil {
			return r, err
		}
		r.Completion = &c
	}
	return r, r.Validate()
}

func strictUnmarshal(data []byte, v any) error {
	data = bytes.TrimSpace(data)
	if len(data) == 0 || data[0] != '{' {
		return fmt.Errorf("want a JSON object")
	}
	return json.Unmarshal(data, v)
}

// Result error codes.
const (
	CodeInvalidRequest = "invalid_request"     // the row breaks §7.1 or is not a request
	CodeDuplicateID    = "duplicate_custom_id" // the custom_id was used by an earlier row
	CodeTooLarge       = "request_too_large"   // the row exceeds the message size limit
	CodeModelError     = "model_error"         // the model rejected the request (too long for its context, ...)
	CodeDeadLetter     = "dead_letter"         // the request kept failing and went to LF_DLQ
	CodeCancelled      = "cancelled"
)

// ResultError says why a request has no response.
type ResultError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// ScoreOutput is the result of a score request. For a DPO row Chosen and
// Rejected are set and DPOMargin is logp(chosen) - logp(rejected); the other
// fields then describe the chosen completion.
type ScoreOutput struct {
	SumLogprob  float64      `json:"sum_logprob"`
	MeanLogprob float64      `json:"mean_logprob"`
	Perplexity  float64      `json:"perplexity"`
	Tokens      int          `json:"tokens"`
	Chosen      *ScoreOutput `json:"chosen,omitempty"`
	Rejected    *ScoreOutput `json:"rejected,omitempty"`
	DPOMargin   *float64     `json:"dpo_margin,omitempty"`
}

// ScoreColumns are the score columns of a Parquet row, one set of names for
// the `score` command's file and a score job's results.parquet. A column
// that does not apply is null: the chosen, rejected and margin columns of a
// text or prompt+completion row, every column of a row that failed. The row
// types spell these fields out rather than embed them (parquet-go reads an
// embedded struct's null pointers back as zeros); their tests hold the names
// to this type's.
type ScoreColumns struct {
	SumLogprob      *float64 `parquet:"sum_logprob,optional" json:"sum_logprob,omitempty"`
	MeanLogprob     *float64 `parquet:"mean_logprob,optional" json:"mean_logprob,omitempty"`
	Perplexity      *float64 `parquet:"perplexity,optional" json:"perplexity,omitempty"`
	Tokens          *int64   `parquet:"tokens,optional" json:"tokens,omitempty"`
	ChosenLogprob   *float64 `parquet:"chosen_logprob,optional" json:"chosen_logprob,omitempty"`
	RejectedLogprob *float64 `parquet:"rejected_logprob,optional" json:"rejected_logprob,omitempty"`
	DPOMargin       *float64 `parquet:"dpo_margin,optional" json:"dpo_margin,omitempty"`
}

// Columns flattens the output into its Parquet columns: for a DPO row
// sum_logprob, mean_logprob, perplexity and tokens are the chosen
// completion's, chosen_logprob and rejected_logprob the two sums.
func (s ScoreOutput) Columns() ScoreColumns {
	c := ScoreColumns{SumLogprob: ptr(s.SumLogprob), MeanLogprob: ptr(s.MeanLogprob), Perplexity: ptr(s.Perplexity), Tokens: ptr(int64(s.Tokens))}
	if s.Chosen != nil && s.Rejected != nil {
		c.ChosenLogprob, c.RejectedLogprob = ptr(s.Chosen.SumLogprob), ptr(s.Rejected.SumLogprob)
	}
	if s.DPOMargin != nil {
		c.DPOMargin = ptr(*s.DPOMargin)
	}
	return c
}

// Result controls: a Result with Control set is a marker for the sink, not a row.
const (
	// ControlSubmitted follows the last request of a job: its total is known.
	ControlSubmitted = "submitted"
	// ControlCancel asks the sink to finalise a cancelling job.
	ControlCancel = "cancel"
)

// Result is the outcome of one request, published on lf.res.<job> with
// Nats-Msg-Id MsgID(job, custom_id): Response (completion) or Score (scoring)
// on success, Error otherwise.
//
// Response and Score hold the body as the worker encoded it (a
// CompletionResponse, a ScoreOutput: see NewResult), a JSON object that
// travels as it is into results.parquet and output.jsonl, never decoded and
// encoded again; DecodeResponse and DecodeScore read it.
type Result struct {
	Job       string          `json:"job"`
	CustomID  string          `json:"custom_id,omitempty"`
	Model     string          `json:"model,omitempty"`
	Kind      string          `json:"kind,omitempty"`
	Line      int             `json:"line,omitempty"`
	Response  json.RawMessage `json:"response,omitempty"`
	Score     json.RawMessage `json:"score,omitempty"`
	Error     *ResultError    `json:"error,omitempty"`
	LatencyMS float64         `json:"latency_ms,omitempty"`
	Worker    string          `json:"worker,omitempty"`
	Control   string          `json:"control,omitempty"`
}

// NewResult is the successful row of a request of kind KindCompletion (body
// a CompletionResponse) or KindScore (a ScoreOutput), its body encoded once,
// here.
func NewResult(job, customID, model, kind string, line int, body any) (Result, error) {
	data, err := json.Marshal(body)
	if err != nil {
		return Result{}, fmt.Errorf("%w: result %s: %v", ErrBadMessage, MsgID(job, customID), err)
	}
	r := Result{Job: job, CustomID: customID, Model: model, Kind: kind, Line: line}
	switch kind {
	case KindCompletion:
		r.Response = data
	case KindScore:
		r.Score = data
	default:
		return Result{}, fmt.Errorf("%w: result %s of kind %q", ErrBadMessage, MsgID(job, customID), kind)
	}
	return r, nil
}

// DecodeResponse decodes the CompletionResponse of a completion row.
func (r Result) DecodeResponse() (CompletionResponse, error) {
	return decodeBody[CompletionResponse](r, "response", r.Response)
}

// DecodeScore decodes the ScoreOutput of a score row.
func (r Result) DecodeScore() (ScoreOutput, error) {
	return decodeBody[ScoreOutput](r, "score", r.Score)
}

func decodeBody[T any](r Result, what string, body json.RawMessage) (T, error) {
	var v T
	if err := json.Unmarshal(body, &v); err != nil {
		return v, fmt.Errorf("%w: %s of %s: %v", ErrBadMessage, what, MsgID(r.Job, r.CustomID), err)
	}
	return v, nil
}

// DecodeResult decodes and checks a Result message; errors wrap ErrBadMessage.
func DecodeResult(data []byte) (Result, error) {
	var r Result
	if err := strictUnmarshal(data, &r); err != nil {
		return Result{}, fmt.Errorf("%w: result: %v", ErrBadMessage, err)
	}
	if err := ValidJobID(r.Job); err != nil {
		return Result{}, fmt.Errorf("%w: result job: %v", ErrBadMessage, err)
	}
	if r.Control != "" {
		switch r.Control {
		case ControlSubmitted, ControlCancel:
			return r, nil
		}
		return Result{}, fmt.Errorf("%w: result control %q", ErrBadMessage, r.Control)
	}
	if err := ValidCustomID(r.CustomID); err != nil {
		return Result{}, err
	}
	n := 0
	for _, body := range []*json.RawMessage{&r.Response, &r.Score} {
		if string(*body) == "null" {
			*body = nil
		}
		if len(*body) > 0 && (*body)[0] != '{' {
			return Result{}, fmt.Errorf("%w: result %s: a body that is not a JSON object", ErrBadMessage, r.CustomID)
		}
	}
	for _, set := range []bool{r.Response != nil, r.Score != nil, r.Error != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		return Result{}, fmt.Errorf("%w: result %s has %d of response, score, error (want 1)", ErrBadMessage, r.CustomID, n)
	}
	return r, nil
}

// ErrorResult makes the error row of a request.
func ErrorResult(job, customID, model, kind string, line int, code, msg string) Result {
	return Result{Job: job, CustomID: customID, Model: model, Kind: kind, Line: line,
		Error: &ResultError{Code: code, Message: msg}}
}

// OutputLine is one line of output.jsonl and errors.jsonl: the OpenAI batch
// output shape.
type OutputLine struct {
	ID       string          `json:"id"`
	CustomID string          `json:"custom_id"`
	Response *OutputResponse `json:"response"`
	Error    *ResultError    `json:"error"`
}

// OutputResponse is the response of an OutputLine; Body is a §3.2
// CompletionResponse, a ScoreOutput, or {"error": ...} for a failed row.
type OutputResponse struct {
	StatusCode int             `json:"status_code"`
	RequestID  string          `json:"request_id"`
	Body       json.RawMessage `json:"body"`
}

func ptr[T any](v T) *T { return &v }
