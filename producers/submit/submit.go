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
	"bytes"
	"context"
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
	store, err := jobs.Open(ctx, bus)
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
//
// Each row goes through four stages: read (rowReader), parse (a request, or
// an error row), route (the expert of an "auto" row) and publish.
func (s *Submitter) Submit(ctx context.Context, path string, progress func(rows int)) (Summary, error) {
	start := time.Now()
	rr, closeInput, err := openInput(path)
	if err != nil {
		return Summary{}, err
	}
	defer closeInput()
	abs, _ := filepath.Abs(path)
	return s.run(ctx, start, rr, abs, path, progress)
}

// SubmitReader is Submit over the JSONL rows read from r (an uploaded file
// of the gateway's Files API): input is what the job record names as its
// input file (the file's id), and what errors name.
func (s *Submitter) SubmitReader(ctx context.Context, input string, r io.Reader, progress func(rows int)) (Summary, error) {
	return s.run(ctx, time.Now(), read.NewLines(r, maxRow), input, input, progress)
}

// run submits the rows of rr as the job whose input file is input (name:
// how errors call it).
func (s *Submitter) run(ctx context.Context, start time.Time, rr rowReader, input, name string, progress func(rows int)) (Summary, error) {
	job, err := s.openJob(ctx, input)
	if err != nil {
		return Summary{Job: job}, err
	}
	b := &submission{s: s, job: job, start: start, sum: Summary{Job: job}, seen: map[[16]byte]int{},
		log: s.log.With().Str("job", job.ID).Logger()}
	if b.reqSubj, err = pipeline.RequestSubject(job.ID, job.Model); err != nil {
		return b.sum, b.fail(ctx, "invalid_job", err)
	}
	b.resSubj, _ = pipeline.ResultSubject(job.ID)
	b.routeSubj, _ = pipeline.RouteSubject(job.ID)
	b.pub = s.bus.NewPublisher(s.cfg.Window)
	defer func() { _ = b.pub.Close(context.WithoutCancel(ctx)) }()

	rows, err := b.stream(ctx, rr, name, progress)
	if err != nil {
		return b.sum, err
	}
	return b.sum, b.finish(ctx, rows, progress)
}

// openJob creates the job, or returns the job of a submission that stopped
// midway (the submitter died) when Config.JobID names one still validating
// with the same kind and model: the same file again under the same id.
// Requests already on the bus are deduplicated by their Nats-Msg-Id,
// results by the sink.
func (s *Submitter) openJob(ctx context.Context, input string) (jobs.Job, error) {
	job, err := s.store.Create(ctx, jobs.Spec{ID: s.cfg.JobID, Kind: s.cfg.Kind, Model: s.cfg.Model, InputFile: input, CompletionWindow: s.cfg.CompletionWindow})
	if !errors.Is(err, jobs.ErrExists) {
		return job, err
	}
	if job, err = s.store.Get(ctx, s.cfg.JobID); err != nil {
		return jobs.Job{}, err
	}
	if job.Status != jobs.StatusValidating || job.Kind != s.cfg.Kind || job.Model != s.cfg.Model {
		return job, fmt.Errorf("%w: job %s is %s (%s, model %s); only a job still validating with the same kind and model is resumed",
			jobs.ErrExists, job.ID, job.Status, job.Kind, job.Model)
	}
	return job, nil
}

// submission is the state of one Submit: the job, its subjects, the
// publisher and the custom_ids seen so far.
type submission struct {
	s     *Submitter
	job   jobs.Job
	log   zerolog.Logger
	start time.Time
	sum   Summary

	reqSubj, resSubj, routeSubj string
	pub                         *pipeline.Publisher
	seen                        map[[16]byte]int // custom_id hash → line; 24 bytes a row

	// The custom_ids of the current chunk (jobs.IDsKey) and the messages
	// held until it is recorded: no request goes out before its id is in
	// lf_jobs, where the results sink checks each result's custom_id.
	chunk   int
	ids     []string
	idBytes int
	held    []heldMsg
	heldLen int
}

// heldMsg is a message waiting for its custom_id to be recorded.
type heldMsg struct {
	subj, msgID string
	data        []byte
}

// maxHeld bounds the bytes of messages held for one chunk: past it the chunk
// is recorded as far as it goes (a prefix, extended later) and they go out.
const maxHeld = 8 << 20

// fail fails the job with a report and returns the error to give the caller.
func (b *submission) fail(ctx context.Context, code string, cause error) error {
	j, ferr := b.s.store.Fail(context.WithoutCancel(ctx), b.job.ID, jobs.ErrorReport{Code: code, Message: cause.Error()})
	if ferr == nil {
		b.sum.Job = j
	}
	b.sum.Elapsed = time.Since(b.start)
	b.log.Error().Err(cause).Msg("job failed at submission")
	return fmt.Errorf("job %s: %w", b.job.ID, cause)
}

// publishFailed fails the job after a publish error: interrupted when ctx
// ended, else publish_failed.
func (b *submission) publishFailed(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return b.fail(ctx, "submit_interrupted", ctx.Err())
	}
	return b.fail(ctx, "publish_failed", err)
}

// stream reads every row of rr, parses, routes and publishes it, and
// returns the number of rows (blank lines not counted).
func (b *submission) stream(ctx context.Context, rr rowReader, path string, progress func(rows int)) (int, error) {
	line, rows := 0, 0
	next, stop := b.rowsOf(rr)
	defer stop()
	for {
		data, tooLarge, err := next(ctx)
		if err == io.EOF {
			return rows, nil
		}
		var rf releaseFailed
		if errors.As(err, &rf) {
			return rows, rf.err
		}
		if err != nil {
			if err := b.release(ctx, false); err == nil {
				_ = b.pub.Flush(ctx)
			}
			return rows, b.fail(ctx, "unreadable_file", fmt.Errorf("%w: %s after row %d: %w", ErrUnreadable, path, line, err))
		}
		line++
		if !tooLarge && len(strings.TrimSpace(string(data))) == 0 {
			continue
		}
		rows++
		id, req, bad := b.parse(data, tooLarge, line)
		subj, routeRec := b.reqSubj, []byte(nil)
		if bad == nil {
			if subj, routeRec, bad, err = b.route(ctx, id, &req); err != nil {
				return rows, b.fail(ctx, "submit_interrupted", err)
			}
		}
		if err := b.publish(ctx, id, line, req, subj, routeRec, bad); err != nil {
			return rows, err
		}
		if rows%checkEvery == 0 {
			if progress != nil {
				progress(rows)
			}
			if j, err := b.s.store.Get(ctx, b.job.ID); err == nil && (j.Status == jobs.StatusCancelling || j.Status.Terminal()) {
				b.sum.Job, b.sum.Rows, b.sum.Elapsed = j, rows, time.Since(b.start)
				return rows, fmt.Errorf("%w: %s", ErrCancelled, b.job.ID)
			}
		}
	}
}

// releaseFailed carries the error of a release (or an interruption) that
// happened while waiting for the input: the job is failed already.
type releaseFailed struct{ err error }

func (r releaseFailed) Error() string { return r.err.Error() }

// idleFlush is how long the input may be silent before the messages held
// for the current chunk are released (its ids recorded as far as they go):
// a submission read from a pipe that stalls (tail -f | submit) still has
// its rows published.
const idleFlush = 100 * time.Millisecond

// rowsOf reads rr's rows in a goroutine, so that next can release the held
// messages whenever the input is silent for idleFlush. stop ends the reader
// (it returns once its current Next does).
func (b *submission) rowsOf(rr rowReader) (next func(context.Context) ([]byte, bool, error), stop func()) {
	type row struct {
		data     []byte
		tooLarge bool
		err      error
	}
	rows := make(chan row, 64)
	done := make(chan struct{})
	go func() {
		defer close(rows)
		for {
			data, tooLarge, err := rr.Next()
			r := row{data: bytes.Clone(data), tooLarge: tooLarge, err: err}
			select {
			case rows <- r:
			case <-done:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	idle := time.NewTimer(idleFlush)
	next = func(ctx context.Context) ([]byte, bool, error) {
		for {
			idle.Reset(idleFlush) // Go 1.23 timers: no stale tick survives a Reset
			select {
			case r, ok := <-rows:
				if !ok {
					return nil, false, io.EOF
				}
				return r.data, r.tooLarge, r.err
			case <-idle.C:
				if len(b.held) > 0 {
					if err := b.release(ctx, false); err != nil {
						return nil, false, releaseFailed{err}
					}
				}
			case <-ctx.Done():
				return nil, false, releaseFailed{b.publishFailed(ctx, ctx.Err())}
			}
		}
	}
	return next, func() { close(done); idle.Stop() }
}

// parse turns row line into its custom_id and request, or an error row (bad
// not nil): over the size limit, not a request, breaking a rule, or a
// custom_id seen before (renamed <id>#row<line> so that both rows stay).
func (b *submission) parse(data []byte, tooLarge bool, line int) (string, schemas.Request, *rowError) {
	var (
		id  string
		req schemas.Request
		bad *rowError
	)
	if tooLarge {
		id, bad = strconv.Itoa(line), &rowError{schemas.CodeTooLarge, fmt.Sprintf("row %d is larger than %d bytes", line, maxRow)}
	} else {
		id, req, bad = parseRow(data, line, b.job.Model, b.job.Kind)
	}
	h := jobs.IDHash(id)
	if first, dup := b.seen[h]; dup {
		bad = &rowError{schemas.CodeDuplicateID, fmt.Sprintf("duplicate custom_id %q (first on row %d)", id, first)}
		id = id + "#row" + strconv.Itoa(line)
		h = jobs.IDHash(id)
	}
	b.seen[h] = line
	return id, req, bad
}

// route returns the subject of a completion row that names another model
// than the job's (an expert of an "auto" job) or that must be routed
// ("auto"), setting its model to the target, with the routing decision to
// publish (nil when the row named its expert). A row that cannot be routed
// is an error row; err is set only when ctx ended.
func (b *submission) route(ctx context.Context, id string, req *schemas.Request) (subj string, routeRec []byte, bad *rowError, err error) {
	subj = b.reqSubj
	if req.Completion == nil || (req.Completion.Model == b.job.Model && b.job.Model != AutoModel) {
		return subj, nil, nil, nil
	}
	target := req.Completion.Model
	if target == AutoModel {
		if b.s.auto == nil {
			return "", nil, &rowError{schemas.CodeInvalidRequest, fmt.Sprintf("model %q: no experts to route to (submit with --experts, or put experts in lf_experts)", AutoModel)}, nil
		}
		var rerr error
		if target, routeRec, rerr = b.s.auto.route(ctx, b.job.ID, id, routing.RouteText(*req.Completion)); rerr != nil {
			if ctx.Err() != nil {
				return "", nil, nil, ctx.Err()
			}
			return "", nil, &rowError{schemas.CodeInvalidRequest, rerr.Error()}, nil
		}
	}
	if subj, err = pipeline.RequestSubject(b.job.ID, target); err != nil {
		return "", nil, &rowError{schemas.CodeInvalidRequest, err.Error()}, nil
	}
	req.Completion.Model, req.Model = target, target
	return subj, routeRec, nil, nil
}

// publish puts a row on the bus: its routing decision (if any) and request,
// or its error row on lf.res.<job>; each goes out once its custom_id is
// recorded (hold).
func (b *submission) publish(ctx context.Context, id string, line int, req schemas.Request, subj string, routeRec []byte, bad *rowError) error {
	msgID := schemas.MsgID(b.job.ID, id)
	var msgs []heldMsg
	if bad != nil {
		b.sum.Rejected++
		data, _ := json.Marshal(schemas.ErrorResult(b.job.ID, id, b.job.Model, b.job.Kind, line, bad.code, bad.msg))
		msgs = append(msgs, heldMsg{b.resSubj, msgID, data})
	} else {
		if routeRec != nil {
			if b.sum.Routed == nil {
				b.sum.Routed = map[string]int{}
			}
			b.sum.Routed[req.Model]++
			msgs = append(msgs, heldMsg{b.routeSubj, "route/" + msgID, routeRec})
		}
		req.Job = b.job.ID
		data, _ := json.Marshal(req)
		b.sum.Published++
		msgs = append(msgs, heldMsg{subj, msgID, data})
	}
	return b.hold(ctx, id, msgs)
}

// hold adds a row's custom_id to the current chunk and holds its messages
// until the chunk is recorded. A chunk ends after jobs.IDsChunkRows ids or
// before jobs.IDsChunkBytes, so a resumed submission of the same file cuts
// the same chunks; past maxHeld bytes of messages the chunk is recorded as
// far as it goes and they are released.
func (b *submission) hold(ctx context.Context, id string, msgs []heldMsg) error {
	if len(b.ids) == jobs.IDsChunkRows || b.idBytes+len(id)+1 > jobs.IDsChunkBytes {
		if err := b.release(ctx, true); err != nil {
			return err
		}
	}
	b.ids = append(b.ids, id)
	b.idBytes += len(id) + 1
	for _, m := range msgs {
		b.held = append(b.held, m)
		b.heldLen += len(m.data)
	}
	if b.heldLen >= maxHeld {
		return b.release(ctx, false)
	}
	return nil
}

// release records the current chunk of custom_ids, then publishes the
// messages held for it; next starts a new chunk.
func (b *submission) release(ctx context.Context, next bool) error {
	if len(b.ids) > 0 {
		if err := b.s.store.PutIDs(ctx, b.job.ID, b.chunk, b.ids); err != nil {
			return b.publishFailed(ctx, err)
		}
	}
	for _, m := range b.held {
		if err := b.pub.Publish(ctx, m.subj, m.data, m.msgID, nil); err != nil {
			return b.publishFailed(ctx, err)
		}
	}
	b.held, b.heldLen = b.held[:0], 0
	if next && len(b.ids) > 0 {
		b.chunk++
		b.ids, b.idBytes = b.ids[:0], 0
	}
	return nil
}

// finish flushes the publisher, marks the job in_progress with its total
// and tells the results sink the submission is complete.
func (b *submission) finish(ctx context.Context, rows int, progress func(rows int)) error {
	if err := b.release(ctx, true); err != nil {
		return err
	}
	if err := b.pub.Flush(ctx); err != nil {
		return b.fail(ctx, "publish_failed", err)
	}
	if progress != nil {
		progress(rows)
	}
	b.sum.Rows = rows
	j, err := b.s.store.Transition(ctx, b.job.ID, jobs.StatusInProgress, func(j *jobs.Job) { j.RequestCounts.Total = rows })
	if err != nil {
		if errors.Is(err, jobs.ErrIllegalTransition) { // cancelled meanwhile
			b.sum.Job = j
			return fmt.Errorf("%w: %s", ErrCancelled, b.job.ID)
		}
		return err
	}
	b.sum.Job = j
	if err := jobs.PublishControl(ctx, b.s.bus, b.job.ID, schemas.ControlSubmitted); err != nil {
		return err
	}
	b.sum.Elapsed = time.Since(b.start)
	b.log.Info().Dict("context", zerolog.Dict().Int("rows", rows).Int("published", b.sum.Published).Int("rejected", b.sum.Rejected).
		Float64("rows_per_second", float64(rows)/b.sum.Elapsed.Seconds())).Msg("job submitted")
	return nil
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

// Store returns the job store the submitter writes.
func (s *Submitter) Store() *jobs.Store { return s.store }
