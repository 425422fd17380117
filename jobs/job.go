package jobs

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/largeforge/largeforge/schemas"
)

// Status is a job's lifecycle state.
type Status string

// Job statuses.
const (
	StatusValidating Status = "validating" // the submitter is reading the input file
	StatusInProgress Status = "in_progress"
	StatusFinalizing Status = "finalizing" // every result is in; the sink writes the final files
	StatusCompleted  Status = "completed"
	StatusFailed     Status = "failed"
	StatusCancelling Status = "cancelling" // queued requests are purged; the sink finalises what it has
	StatusCancelled  Status = "cancelled"
	StatusExpired    Status = "expired"
)

// Terminal reports whether s is an end state.
func (s Status) Terminal() bool {
	switch s {
	case StatusCompleted, StatusFailed, StatusCancelled, StatusExpired:
		return true
	}
	return false
}

var transitions = map[Status][]Status{
	StatusValidating: {StatusInProgress, StatusFailed, StatusCancelling, StatusExpired},
	StatusInProgress: {StatusFinalizing, StatusFailed, StatusCancelling, StatusExpired},
	// Back to in_progress: a finalizer that finds rows missing (the counts
	// went past the rows stored, see resultsink) hands the job back.
	StatusFinalizing: {StatusCompleted, StatusFailed, StatusInProgress},
	StatusCancelling: {StatusCancelled, StatusFailed},
}

// CanTransition reports whether a job may move from one status to another.
func CanTransition(from, to Status) bool {
	for _, s := range transitions[from] {
		if s == to {
			return true
		}
	}
	return false
}

// Kinds of job (the values of schemas.Request.Kind and Job.Kind).
const (
	KindCompletion = schemas.KindCompletion
	KindScore      = schemas.KindScore
)

// Objects of job records (the OpenAI API's names).
const (
	ObjectBatch         = "batch"           // completion and score jobs
	ObjectFineTuningJob = "fine_tuning.job" // training jobs
)

// ObjectOf is the object of a job record of kind.
func ObjectOf(kind string) string {
	if kind == KindTraining {
		return ObjectFineTuningJob
	}
	return ObjectBatch
}

// ValidKind checks a job kind.
func ValidKind(kind string) error {
	switch kind {
	case KindCompletion, KindScore, KindTraining:
		return nil
	}
	return fmt.Errorf("%w: kind %q: want %s, %s or %s", ErrInvalidOption, kind, KindCompletion, KindScore, KindTraining)
}

// DefaultCompletionWindow is how long a job may run before it expires.
const DefaultCompletionWindow = 24 * time.Hour

// Counts are a job's request counts.
type Counts struct {
	Total     int `json:"total"`
	Completed int `json:"completed"`
	Failed    int `json:"failed"`
}

// Done is the number of requests with a result.
func (c Counts) Done() int { return c.Completed + c.Failed }

// Outputs name a job's final results: keys of objects in the artifacts
// store (lf_artifacts; jobs/<job>/output.jsonl, ...), readable from any
// machine. LocalDir is a copy on the machine of the sink that finalised the
// job, when that sink mirrors to a data directory (the embedded default);
// it is never the only copy.
type Outputs struct {
	Output   string `json:"output_file,omitempty"`  // key of output.jsonl
	Errors   string `json:"error_file,omitempty"`   // key of errors.jsonl
	Parquet  string `json:"results_file,omitempty"` // key of results.parquet
	LocalDir string `json:"local_dir,omitempty"`    // a local mirror of the three files
}

// ErrorReport says why a job failed, or lists the first problems met.
type ErrorReport struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Line    int    `json:"line,omitempty"`
}

// Job is the record of one job, stored as JSON under its id in lf_jobs.
type Job struct {
	ID               string        `json:"id"`
	Object           string        `json:"object"` // ObjectOf(Kind): "batch" or "fine_tuning.job"
	Kind             string        `json:"kind"`
	Model            string        `json:"model"`
	Status           Status        `json:"status"`
	InputFile        string        `json:"input_file"`
	CompletionWindow string        `json:"completion_window"`
	RequestCounts    Counts        `json:"request_counts"`
	Outputs          Outputs       `json:"outputs"`
	Errors           []ErrorReport `json:"errors,omitempty"`
	CreatedAt        int64         `json:"created_at"`
	InProgressAt     int64         `json:"in_progress_at,omitempty"`
	FinalizingAt     int64         `json:"finalizing_at,omitempty"`
	CompletedAt      int64         `json:"completed_at,omitempty"`
	FailedAt         int64         `json:"failed_at,omitempty"`
	CancellingAt     int64         `json:"cancelling_at,omitempty"`
	CancelledAt      int64         `json:"cancelled_at,omitempty"`
	ExpiredAt        int64         `json:"expired_at,omitempty"`
	ExpiresAt        int64         `json:"expires_at"`
	// Finalizer is the results sink that writes the job's final files, until
	// FinalizerUntil (unix milliseconds); another sink may take the job over
	// once that lease has run out.
	Finalizer      string `json:"finalizer,omitempty"`
	FinalizerUntil int64  `json:"finalizer_until,omitempty"`
	// Publisher is the gateway publishing a batch's requests (validating),
	// until PublisherUntil (unix milliseconds); another gateway resumes the
	// publishing once that lease has run out.
	Publisher      string `json:"publisher,omitempty"`
	PublisherUntil int64  `json:"publisher_until,omitempty"`
	// Replaying are the custom_ids of dead-lettered requests replayed into
	// the reopened job (Reopen, largeforge dlq replay) whose new row has not
	// come yet: the job is not finalised while any is listed. Replaced are
	// those whose new row came: the merge keeps their last row, not their
	// first (the error row it replaces).
	Replaying []string `json:"replaying,omitempty"`
	Replaced  []string `json:"replaced,omitempty"`
	// Revision is the KV revision the record was read at (not stored).
	Revision uint64 `json:"-"`

	// Training is a training job's progress (nil for other kinds).
	Training *TrainingProgress `json:"training,omitempty"`
}

// MaxErrorReports bounds Job.Errors; further problems are only counted.
const MaxErrorReports = 20

// NewID returns a fresh job id: "batch_" and 24 hex digits (a valid subject
// token and KV key).
func NewID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "batch_" + hex.EncodeToString(b[:])
}

// ValidID checks that id can be a KV key and a subject token.
func ValidID(id string) error {
	if err := schemas.ValidJobID(id); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidOption, err)
	}
	return nil
}

// Spec is what a new job is created from.
type Spec struct {
	ID               string        // empty: NewID()
	Kind             string        // completion (default) or score
	Model            string        // required; a subject token
	InputFile        string        // for the record
	CompletionWindow time.Duration // 0: DefaultCompletionWindow
}

// Validate checks the spec.
func (s Spec) Validate() error {
	if s.ID != "" {
		if err := ValidID(s.ID); err != nil {
			return err
		}
	}
	if s.Kind != "" {
		if err := ValidKind(s.Kind); err != nil {
			return err
		}
	}
	if err := ValidID(s.Model); err != nil {
		return fmt.Errorf("%w: model %q: want a name of letters, digits, '-' and '_'", ErrInvalidOption, s.Model)
	}
	if s.CompletionWindow < 0 {
		return fmt.Errorf("%w: completion window %v is negative", ErrInvalidOption, s.CompletionWindow)
	}
	return nil
}

// NewJob makes the validating record of a spec created at now.
func NewJob(s Spec, now time.Time) (Job, error) {
	if err := s.Validate(); err != nil {
		return Job{}, err
	}
	if s.ID == "" {
		s.ID = NewID()
	}
	if s.Kind == "" {
		s.Kind = KindCompletion
	}
	if s.CompletionWindow == 0 {
		s.CompletionWindow = DefaultCompletionWindow
	}
	return Job{
		ID: s.ID, Object: ObjectOf(s.Kind), Kind: s.Kind, Model: s.Model, Status: StatusValidating,
		InputFile: s.InputFile, CompletionWindow: s.CompletionWindow.String(),
		CreatedAt: now.Unix(), ExpiresAt: now.Add(s.CompletionWindow).Unix(),
	}, nil
}

// SetStatus moves j to status to at now, stamping the matching timestamp.
// Errors wrap ErrIllegalTransition.
func (j *Job) SetStatus(to Status, now time.Time) error {
	if !CanTransition(j.Status, to) {
		return fmt.Errorf("%w: job %s from %s to %s", ErrIllegalTransition, j.ID, j.Status, to)
	}
	ts := now.Unix()
	switch to {
	case StatusInProgress:
		j.InProgressAt = ts
	case StatusFinalizing:
		j.FinalizingAt = ts
	case StatusCompleted:
		j.CompletedAt = ts
	case StatusFailed:
		j.FailedAt = ts
	case StatusCancelling:
		j.CancellingAt = ts
	case StatusCancelled:
		j.CancelledAt = ts
	case StatusExpired:
		j.ExpiredAt = ts
	}
	j.Status = to
	return nil
}

// AddError appends a report, keeping at most MaxErrorReports.
func (j *Job) AddError(e ErrorReport) {
	if len(j.Errors) < MaxErrorReports {
		j.Errors = append(j.Errors, e)
	}
}
