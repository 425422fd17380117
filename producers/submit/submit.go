// Package submit turns a batch job file (JSONL of §3.1 completion requests,
// OpenAI Batch API lines, or Parquet with the same columns; score rows for
// scoring jobs) into a job in lf_jobs and one request per row on
// lf.req.<job>.<model>, streaming the file in constant memory.
//
// A completion job whose model is "auto" (or a row whose model is "auto")
// goes through a routing.Router (Config.Router: rules, then the learned
// classifier): each such row is published to lf.req.<job>.<expert> and its
// decision to LF_ROUTES on lf.route.<job>. A row of an auto job may also
// name its expert itself.
//
// A row that breaks §7.1, is not a request, or repeats an earlier custom_id
// becomes an error row published straight to lf.res.<job> (the results sink
// counts it failed) and the job goes on. A file that cannot be opened creates
// no job; one that cannot be read to its end fails the job with a report.
package submit

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/largeforge/largeforge/dataset/read"
	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/routing"
	"github.com/largeforge/largeforge/schemas"
)

// Defaults.
const (
	DefaultWindow = 2048 // async publishes in flight
	// checkEvery is how many rows pass between checks that the job was not cancelled.
	checkEvery = 2000
	// maxRow is the largest row accepted: a request must fit one message.
	maxRow = pipeline.MaxMsgSize - 8<<10
)

// Config is a submission.
type Config struct {
	Model            string        // required: the job's model (a subject token)
	Kind             string        // jobs.KindCompletion (default) or jobs.KindScore
	JobID            string        // empty: a new id
	CompletionWindow time.Duration // 0: jobs.DefaultCompletionWindow
	Window           int           // async publish window (default DefaultWindow)
	// Router routes completion rows whose model is "auto" (every row of a
	// job whose model is "auto", unless the row names its expert): each
	// goes to lf.req.<job>.<expert> and its decision to lf.route.<job>.
	// Required when Model is "auto". The submitter does not close it.
	Router *routing.Router
}

// Validate checks the config; errors wrap ErrInvalidOption.
func (c Config) Validate() error {
	spec := jobs.Spec{ID: c.JobID, Kind: c.Kind, Model: c.Model, CompletionWindow: c.CompletionWindow}
	if err := spec.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidOption, err)
	}
	if c.Window < 0 {
		return fmt.Errorf("%w: window %d is negative", ErrInvalidOption, c.Window)
	}
	if c.Model == AutoModel {
		if c.Kind != "" && c.Kind != jobs.KindCompletion {
			return fmt.Errorf("%w: model %q routes completion jobs only", ErrInvalidOption, AutoModel)
		}
		if c.Router == nil {
			return fmt.Errorf("%w: model %q needs experts to route to (an experts file or the lf_experts bucket)", ErrInvalidOption, AutoModel)
		}
	}
	return nil
}

// Submitter submits job files over one bus.
type Submitter struct {
	bus   *pipeline.Bus
	store *jobs.Store
	cfg   Config
	log   zerolog.Logger
	auto  *autoRouter // nil without Config.Router
}

// New validates cfg and returns a Submitter.
func New(ctx context.Context, bus *pipeline.Bus, cfg Config, log zerolog.Logger) (*Submitter, error) {
	if bus == nil {
		return nil, fmt.Errorf("%w: nil bus", ErrInvalidOption)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Kind == "" {
		cfg.Kind = jobs.KindCompletion
	}
	if cfg.Window == 0 {
		cfg.Window = DefaultWindow
	}
	kv, err := bus.KV(ctx, pipeline.BucketJobs)
	if err != nil {
		return nil, err
	}
	store, err := jobs.NewStore(kv)
	if err != nil {
		return nil, err
	}
	sub := &Submitter{bus: bus, store: store, cfg: cfg, log: log.With().Str("logger", "largeforge.submit").Logger()}
	if cfg.Router != nil {
		if sub.auto, err = newAutoRouter(ctx, bus, cfg.Router); err != nil {
			return nil, err
		}
	}
	return sub, nil
}

// Summary is what a submission did.
type Summary struct {
	Job       jobs.Job // the record after submission (in_progress, or failed)
	Rows      int      // rows read (blank lines not counted)
	Published int      // requests published to lf.req.<job>.<model>
	Rejected  int      // error rows published to lf.res.<job>
	// Routed counts the rows routed ("auto") per chosen expert.
	Routed  map[string]int
	Elapsed time.Duration
}

// Submit creates the job, streams path into requests and marks the job
// in_progress with its total. Given the JobID of a job still validating (its
// submitter died), it resumes that job with the same file. progress, when not nil, is called with the
// number of rows handled so far, now and then. A file that cannot be opened
// (or, for Parquet, whose footer cannot be read) returns an error wrapping
// ErrUnreadable before any job is created; one that fails to read midway
// fails the job with the same error (the job in Summary).
func (s *Submitter) Submit(ctx context.Context, path string, progress func(rows int)) (Summary, error) {
	start := time.Now()
	rr, closeInput, err := openInput(path)
	if err != nil {
		return Summary{}, err
	}
	defer closeInput()
	abs, _ := filepath.Abs(path)
	job, err := s.store.Create(ctx, jobs.Spec{ID: s.cfg.JobID, Kind: s.cfg.Kind, Model: s.cfg.Model, InputFile: abs, CompletionWindow: s.cfg.CompletionWindow})
	if errors.Is(err, jobs.ErrExists) {
		// Resume a submission that stopped midway (the submitter died): the
		// same file again under the same id. Requests already on the bus are
		// deduplicated by their Nats-Msg-Id, results by the sink.
		if job, err = s.store.Get(ctx, s.cfg.JobID); err == nil &&
			(job.Status != jobs.StatusValidating || job.Kind != s.cfg.Kind || job.Model != s.cfg.Model) {
			return Summary{Job: job}, fmt.Errorf("%w: job %s is %s (%s, model %s); only a job still validating with the same kind and model is resumed",
				jobs.ErrExists, job.ID, job.Status, job.Kind, job.Model)
		}
	}
	if err != nil {
		return Summary{}, err
	}
	log := s.log.With().Str("job", job.ID).Logger()
	sum := Summary{Job: job}
	fail := func(code string, cause error) (Summary, error) {
		j, ferr := s.store.Fail(context.WithoutCancel(ctx), job.ID, jobs.ErrorReport{Code: code, Message: cause.Error()})
		if ferr == nil {
			sum.Job = j
		}
		sum.Elapsed = time.Since(start)
		log.Error().Err(cause).Msg("job failed at submission")
		return sum, fmt.Errorf("job %s: %w", job.ID, cause)
	}

	reqSubj, err := pipeline.RequestSubject(job.ID, job.Model)
	if err != nil {
		return fail("invalid_job", err)
	}
	resSubj, _ := pipeline.ResultSubject(job.ID)
	routeSubj, _ := pipeline.RouteSubject(job.ID)
	pub := s.bus.NewPublisher(s.cfg.Window)
	defer func() { _ = pub.Close(context.WithoutCancel(ctx)) }()

	seen := map[[16]byte]int{} // custom_id hash → line; 24 bytes a row
	line := 0
	rows := 0
	for {
		data, tooLarge, rerr := rr.Next()
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			_ = pub.Flush(ctx)
			return fail("unreadable_file", fmt.Errorf("%w: %s after row %d: %w", ErrUnreadable, path, line, rerr))
		}
		line++
		if !tooLarge && len(strings.TrimSpace(string(data))) == 0 {
			continue
		}
		rows++
		var (
			id  string
			req schemas.Request
			bad *rowError
		)
		if tooLarge {
			id, bad = strconv.Itoa(line), &rowError{schemas.CodeTooLarge, fmt.Sprintf("row %d is larger than %d bytes", line, maxRow)}
		} else {
			id, req, bad = parseRow(data, line, job.Model, job.Kind)
		}
		h := hashID(id)
		if first, dup := seen[h]; dup {
			bad = &rowError{schemas.CodeDuplicateID, fmt.Sprintf("duplicate custom_id %q (first on row %d)", id, first)}
			id = id + "#row" + strconv.Itoa(line)
			h = hashID(id)
		}
		seen[h] = line
		subj := reqSubj
		if bad == nil && req.Completion != nil && (req.Completion.Model != job.Model || job.Model == AutoModel) {
			// An expert named by a row of an auto job, or a row to route.
			target, routeRec, rerr := req.Completion.Model, []byte(nil), error(nil)
			if target == AutoModel {
				if s.auto == nil {
					bad = &rowError{schemas.CodeInvalidRequest, fmt.Sprintf("model %q: no experts to route to (submit with --experts, or put experts in lf_experts)", AutoModel)}
				} else if target, routeRec, rerr = s.auto.route(ctx, job.ID, id, routing.RouteText(*req.Completion)); rerr != nil {
					if ctx.Err() != nil {
						return fail("submit_interrupted", ctx.Err())
					}
					bad = &rowError{schemas.CodeInvalidRequest, rerr.Error()}
				}
			}
			if bad == nil {
				if subj, err = pipeline.RequestSubject(job.ID, target); err != nil {
					bad = &rowError{schemas.CodeInvalidRequest, err.Error()}
				}
			}
			if bad == nil {
				req.Completion.Model, req.Model = target, target
				if routeRec != nil {
					if sum.Routed == nil {
						sum.Routed = map[string]int{}
					}
					sum.Routed[target]++
					if err := pub.Publish(ctx, routeSubj, routeRec, "route/"+schemas.MsgID(job.ID, id), nil); err != nil {
						if ctx.Err() != nil {
							return fail("submit_interrupted", ctx.Err())
						}
						return fail("publish_failed", err)
					}
				}
			}
		}
		var perr error
		if bad != nil {
			sum.Rejected++
			res := schemas.ErrorResult(job.ID, id, job.Model, job.Kind, line, bad.code, bad.msg)
			data, _ := json.Marshal(res)
			perr = pub.Publish(ctx, resSubj, data, schemas.MsgID(job.ID, id), nil)
		} else {
			req.Job = job.ID
			data, _ := json.Marshal(req)
			sum.Published++
			perr = pub.Publish(ctx, subj, data, schemas.MsgID(job.ID, id), nil)
		}
		if perr != nil {
			if ctx.Err() != nil {
				return fail("submit_interrupted", ctx.Err())
			}
			return fail("publish_failed", perr)
		}
		if rows%checkEvery == 0 {
			if progress != nil {
				progress(rows)
			}
			if j, err := s.store.Get(ctx, job.ID); err == nil && (j.Status == jobs.StatusCancelling || j.Status.Terminal()) {
				sum.Job, sum.Rows, sum.Elapsed = j, rows, time.Since(start)
				return sum, fmt.Errorf("%w: %s", ErrCancelled, job.ID)
			}
		}
	}
	if err := pub.Flush(ctx); err != nil {
		return fail("publish_failed", err)
	}
	if progress != nil {
		progress(rows)
	}
	sum.Rows = rows
	j, err := s.store.Transition(ctx, job.ID, jobs.StatusInProgress, func(j *jobs.Job) { j.RequestCounts.Total = rows })
	if err != nil {
		if errors.Is(err, jobs.ErrIllegalTransition) { // cancelled meanwhile
			sum.Job = j
			return sum, fmt.Errorf("%w: %s", ErrCancelled, job.ID)
		}
		return sum, err
	}
	sum.Job = j
	if err := jobs.PublishControl(ctx, s.bus, job.ID, schemas.ControlSubmitted); err != nil {
		return sum, err
	}
	sum.Elapsed = time.Since(start)
	log.Info().Dict("context", zerolog.Dict().Int("rows", rows).Int("published", sum.Published).Int("rejected", sum.Rejected).
		Float64("rows_per_second", float64(rows)/sum.Elapsed.Seconds())).Msg("job submitted")
	return sum, nil
}

// rowReader yields the rows of an input file as JSON objects, one at a time
// (read.Lines, read.RequestParquet).
type rowReader interface {
	// Next returns the next row; tooLarge is set (and data nil) for a row over
	// the size limit. io.EOF at the end.
	Next() (data []byte, tooLarge bool, err error)
}

// openInput opens a job file and returns the reader of its rows: a file (not
// a directory) that opens, and for Parquet one whose footer reads.
func openInput(path string) (rowReader, func(), error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrUnreadable, err)
	}
	st, err := f.Stat()
	if err == nil && st.IsDir() {
		err = fmt.Errorf("is a directory")
	}
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("%w: %s: %w", ErrUnreadable, path, err)
	}
	closeFn := func() { _ = f.Close() }
	if !strings.EqualFold(filepath.Ext(path), ".parquet") {
		return read.NewLines(f, maxRow), closeFn, nil
	}
	pr, err := read.NewRequestParquet(f, maxRow)
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("%w: %s: %w", ErrUnreadable, path, err)
	}
	return pr, closeFn, nil
}

func hashID(id string) [16]byte {
	h := sha256.Sum256([]byte(id))
	return [16]byte(h[:16])
}

// Store returns the job store the submitter writes.
func (s *Submitter) Store() *jobs.Store { return s.store }
