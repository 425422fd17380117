package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"time"

	"github.com/rs/zerolog"

	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/schemas"
	"github.com/largeforge/largeforge/storage"
)

// The OpenAI Batches API (POST /v1/batches, GET /v1/batches,
// GET /v1/batches/{id}, POST /v1/batches/{id}/cancel) over the bus jobs
// that `largeforge submit` makes: a batch is its job record in lf_jobs (the
// only source of its status, counts and timestamps), plus
// batches/<job>/batch.json in lf_artifacts for what the record has no place
// for (endpoint, input file, metadata). A job submitted by the CLI is a
// batch too.
//
// POST /v1/batches checks its parameters and the input file (a 400 or 404
// creates nothing), then reads the file once to validate every line: a
// JSON object with a unique custom_id, method POST, url equal to the
// batch's endpoint, a body that is a valid request of one model. A file
// that fails is a batch created failed, with its errors and nothing on
// the bus. Otherwise the batch answers validating and its requests go out
// in the background (custom_ids recorded, then requests published on
// lf.req.<job>.<model>), then in_progress; the workers and the results
// sink take it from there.

// CompletionWindow24h is the only completion window, as OpenAI's.
const CompletionWindow24h = "24h"

// The endpoints a batch runs.
const (
	URLCompletions     = "/v1/completions"
	URLChatCompletions = "/v1/chat/completions"
)

// BatchError is one entry of a batch's errors.
type BatchError struct {
	Code    string  `json:"code"`
	Message string  `json:"message"`
	Param   *string `json:"param"`
	Line    *int    `json:"line"`
}

// BatchErrors is a batch's errors list.
type BatchErrors struct {
	Object string       `json:"object"`
	Data   []BatchError `json:"data"`
}

// BatchCounts are a batch's request counts.
type BatchCounts struct {
	Total     int `json:"total"`
	Completed int `json:"completed"`
	Failed    int `json:"failed"`
}

// Batch is OpenAI's batch object.
type Batch struct {
	ID               string            `json:"id"`
	Object           string            `json:"object"`
	Endpoint         string            `json:"endpoint"`
	Model            string            `json:"model,omitempty"`
	Errors           *BatchErrors      `json:"errors"`
	InputFileID      string            `json:"input_file_id"`
	CompletionWindow string            `json:"completion_window"`
	Status           string            `json:"status"`
	OutputFileID     *string           `json:"output_file_id"`
	ErrorFileID      *string           `json:"error_file_id"`
	CreatedAt        int64             `json:"created_at"`
	InProgressAt     *int64            `json:"in_progress_at"`
	ExpiresAt        *int64            `json:"expires_at"`
	FinalizingAt     *int64            `json:"finalizing_at"`
	CompletedAt      *int64            `json:"completed_at"`
	FailedAt         *int64            `json:"failed_at"`
	ExpiredAt        *int64            `json:"expired_at"`
	CancellingAt     *int64            `json:"cancelling_at"`
	CancelledAt      *int64            `json:"cancelled_at"`
	RequestCounts    BatchCounts       `json:"request_counts"`
	Metadata         map[string]string `json:"metadata"`
}

// batchRecord is batches/<job>/batch.json.
type batchRecord struct {
	Endpoint    string            `json:"endpoint"`
	InputFileID string            `json:"input_file_id"`
	Model       string            `json:"model"` // as the lines name it
	Metadata    map[string]string `json:"metadata,omitempty"`
}

type batches struct {
	f  *files
	id string // this gateway, in the publisher leases it holds
}

// batchRequest is the body of POST /v1/batches.
type batchRequest struct {
	InputFileID      string            `json:"input_file_id"`
	Endpoint         string            `json:"endpoint"`
	CompletionWindow string            `json:"completion_window"`
	Metadata         map[string]string `json:"metadata"`
}

// create serves POST /v1/batches.
func (b *batches) create(w http.ResponseWriter, r *http.Request, l zerolog.Logger) {
	ctx := r.Context()
	body, err := readBody(w, r, b.f.g.cfg.MaxBodyBytes)
	if err != nil {
		b.f.g.bodyError(w, err)
		return
	}
	var req batchRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		if f, ok := unknownField(err); ok {
			writeParamError(w, unknownParam(f))
			return
		}
		errInvalid(w, "", "invalid_request", "The body is not a batch request: %v", err)
		return
	}
	switch {
	case req.InputFileID == "":
		writeParamError(w, missingParam("input_file_id"))
		return
	case req.Endpoint == "":
		writeParamError(w, missingParam("endpoint"))
		return
	case req.Endpoint != URLChatCompletions && req.Endpoint != URLCompletions:
		errInvalid(w, "endpoint", "invalid_value", "Invalid value for 'endpoint': %q; supported: %s, %s.", req.Endpoint, URLChatCompletions, URLCompletions)
		return
	case req.CompletionWindow == "":
		writeParamError(w, missingParam("completion_window"))
		return
	case req.CompletionWindow != CompletionWindow24h:
		errInvalid(w, "completion_window", "invalid_value", "Invalid value for 'completion_window': %q; supported: %s.", req.CompletionWindow, CompletionWindow24h)
		return
	}
	if err := validMetadata(req.Metadata); err != nil {
		errInvalid(w, "metadata", "invalid_value", "Invalid 'metadata': %v.", err)
		return
	}
	fo, err := b.f.lookup(ctx, req.InputFileID)
	switch {
	case errors.Is(err, ErrNoFile):
		writeError(w, http.StatusNotFound, "invalid_request_error", "input_file_id", "", "No such File object: "+req.InputFileID)
		return
	case err != nil:
		errServer(w, err)
		return
	case fo.Purpose != PurposeBatch:
		errInvalid(w, "input_file_id", "invalid_value", "File %s has purpose %q; a batch's input file needs purpose %q.", fo.ID, fo.Purpose, PurposeBatch)
		return
	}
	scan, err := b.validate(ctx, fo.ID, req.Endpoint, true)
	if err != nil {
		errServer(w, err)
		return
	}
	id := jobs.NewID()
	rec := batchRecord{Endpoint: req.Endpoint, InputFileID: fo.ID, Model: scan.model, Metadata: req.Metadata}
	data, _ := json.Marshal(rec)
	if _, err := b.f.obj.Put(ctx, storage.Batch(id), bytes.NewReader(data)); err != nil {
		errServer(w, err)
		return
	}
	served := scan.served
	if served == "" {
		served = "none" // a file that names no valid model: the batch fails
	}
	j, err := b.f.jobs.Create(ctx, jobs.Spec{ID: id, Kind: jobs.KindCompletion, Model: served, InputFile: fo.ID})
	if err != nil {
		_ = storage.DeleteObject(context.WithoutCancel(ctx), b.f.obj, storage.Batch(id))
		errServer(w, err)
		return
	}
	if len(scan.errs) > 0 {
		if j, err = b.f.jobs.Update(ctx, id, func(j *jobs.Job) error {
			for _, e := range scan.errs {
				j.AddError(e)
			}
			return j.SetStatus(jobs.StatusFailed, time.Now())
		}); err != nil {
			errServer(w, err)
			return
		}
		l.Info().Str("job", id).Int("errors", len(scan.errs)).Msg("batch input failed validation")
	} else {
		go func(ctx context.Context, l zerolog.Logger) {
			j, held, err := b.claim(ctx, j.ID, true)
			switch {
			case err != nil: // the lease runs out and a gateway resumes it
				l.Error().Err(err).Msg("take the batch's publisher lease")
			case held:
				b.submit(ctx, j, fo.ID, scan.rows, l)
			}
		}(context.WithoutCancel(ctx), l.With().Str("job", id).Logger())
	}
	writeJSON(w, http.StatusOK, batchOf(j, &rec))
}

// validMetadata checks OpenAI's metadata limits: 16 pairs, keys of at most
// 64 characters, values of at most 512.
func validMetadata(m map[string]string) error {
	if len(m) > 16 {
		return fmt.Errorf("%d pairs, at most 16", len(m))
	}
	for k, v := range m {
		if len(k) > 64 || len(v) > 512 {
			return fmt.Errorf("key %q: keys hold at most 64 characters, values 512", k)
		}
	}
	return nil
}

// scanResult is what validating an input file found.
type scanResult struct {
	rows          int
	model, served string // the model the lines name, and the one that serves it
	errs          []jobs.ErrorReport
}

// batchLine is one valid input line.
type batchLine struct {
	customID string
	req      schemas.CompletionRequest
}

// parseLine checks line n of an input file against the batch's endpoint.
func parseLine(data []byte, n int, endpoint string) (batchLine, *jobs.ErrorReport) {
	bad := func(code, format string, args ...any) (batchLine, *jobs.ErrorReport) {
		return batchLine{}, &jobs.ErrorReport{Code: code, Message: fmt.Sprintf(format, args...), Line: n}
	}
	var line struct {
		CustomID *string         `json:"custom_id"`
		Method   string          `json:"method"`
		URL      string          `json:"url"`
		Body     json.RawMessage `json:"body"`
	}
	if err := json.Unmarshal(data, &line); err != nil {
		return bad("invalid_json_line", "Line %d is not a batch request line: %v", n, err)
	}
	switch {
	case line.CustomID == nil || *line.CustomID == "":
		return bad("missing_custom_id", "Line %d has no custom_id", n)
	case schemas.ValidCustomID(*line.CustomID) != nil:
		return bad("invalid_custom_id", "Line %d: %v", n, schemas.ValidCustomID(*line.CustomID))
	case line.Method != http.MethodPost:
		return bad("invalid_method", "Line %d: method %q; the only method is POST", n, line.Method)
	case line.URL != URLChatCompletions && line.URL != URLCompletions:
		return bad("invalid_url", "Line %d: url %q; supported: %s, %s", n, line.URL, URLChatCompletions, URLCompletions)
	case line.URL != endpoint:
		return bad("mismatched_endpoint", "Line %d: url %s differs from the batch's endpoint %s", n, line.URL, endpoint)
	case len(line.Body) == 0 || line.Body[0] != '{':
		return bad("missing_body", "Line %d has no body object", n)
	}
	body, opts, err := NormalizeRequest(line.Body, endpoint == URLChatCompletions)
	var pe *ParamError
	switch {
	case errors.As(err, &pe):
		return bad(pe.code(), "Line %d: %s", n, pe.Error())
	case err == nil && opts.N != 1:
		return bad("unsupported_parameter", "Line %d: Unsupported parameter: 'n' must be 1 in a batch (one choice per request)", n)
	case err == nil && len(opts.Prompts) > 1:
		return bad("unsupported_parameter", "Line %d: Unsupported parameter: 'prompt' must be one string in a batch (one choice per request)", n)
	}
	var c schemas.CompletionRequest
	if err == nil {
		c, err = schemas.DecodeCompletionRequest(body)
	}
	if err == nil {
		switch {
		case endpoint == URLChatCompletions && !c.IsChat():
			err = fmt.Errorf("%w: a chat completion needs messages", schemas.ErrInvalidRequest)
		case endpoint == URLCompletions && c.IsChat():
			err = fmt.Errorf("%w: a completion takes a prompt, not messages", schemas.ErrInvalidRequest)
		case c.Model == "":
			err = fmt.Errorf("%w: model required", schemas.ErrInvalidRequest)
		case c.Stream:
			err = fmt.Errorf("%w: stream is not supported in a batch", schemas.ErrInvalidRequest)
		default:
			err = c.Validate()
		}
	}
	if err != nil {
		msg, _ := schemas.ValidationMessage(err)
		return bad("invalid_request", "Line %d: %s", n, msg)
	}
	return batchLine{customID: *line.CustomID, req: c}, nil
}

// eachLine streams the non-blank lines of a stored file.
func (f *files) eachLine(ctx context.Context, id string, fn func(n int, data []byte) error) error {
	r, err := f.obj.Get(ctx, storage.FileContent(id))
	if err != nil {
		return fmt.Errorf("read %s: %w", id, err)
	}
	defer r.Close()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxLine+1)
	for n := 1; sc.Scan(); n++ {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		if err := fn(n, sc.Bytes()); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read %s: %w", id, err)
	}
	return nil
}

// served maps a model named in a line to the served model.
func (f *files) served(name string) string {
	if to, ok := f.cfg.ModelMap[name]; ok {
		return to
	}
	return name
}

// validate reads the input file once and reports the first
// jobs.MaxErrorReports problems; err is set only when it cannot be read.
// checkModel: whether the model must be served now (at creation, not when
// a batch's publishing resumes).
func (b *batches) validate(ctx context.Context, id, endpoint string, checkModel bool) (scanResult, error) {
	var s scanResult
	seen := map[[16]byte]int{}
	add := func(e jobs.ErrorReport) {
		if len(s.errs) < jobs.MaxErrorReports {
			s.errs = append(s.errs, e)
		}
	}
	err := b.f.eachLine(ctx, id, func(n int, data []byte) error {
		s.rows++
		bl, bad := parseLine(data, n, endpoint)
		if bad != nil {
			add(*bad)
			return nil
		}
		h := jobs.IDHash(bl.customID)
		if first, dup := seen[h]; dup {
			add(jobs.ErrorReport{Code: "duplicate_custom_id", Message: fmt.Sprintf("Line %d: custom_id %q is also on line %d; custom_ids must be unique", n, bl.customID, first), Line: n})
			return nil
		}
		seen[h] = n
		switch {
		case s.model == "":
			s.model = bl.req.Model
		case bl.req.Model != s.model:
			add(jobs.ErrorReport{Code: "mismatched_model", Message: fmt.Sprintf("Line %d: model %q differs from %q; a batch runs one model", n, bl.req.Model, s.model), Line: n})
		}
		return nil
	})
	if err != nil {
		return s, err
	}
	if s.rows == 0 {
		add(jobs.ErrorReport{Code: "empty_file", Message: "The input file has no requests"})
	}
	if s.model != "" {
		s.served = b.f.served(s.model)
		if jobs.ValidID(s.served) != nil {
			add(jobs.ErrorReport{Code: "model_not_found", Message: fmt.Sprintf("Model %q is not a served model name (map it with the gateway's --batch-model-map %s=SERVED)", s.model, s.model)})
			s.served = ""
		} else if err := b.known(ctx, s.served); checkModel && err != nil {
			add(jobs.ErrorReport{Code: "model_not_found", Message: fmt.Sprintf("Model %q (served as %q) is not served here: %v (map it with the gateway's --batch-model-map)", s.model, s.served, err)})
		}
	}
	return s, nil
}

// known returns nil when a live worker, lf_models or an expert knows the model.
func (b *batches) known(ctx context.Context, name string) error {
	live, stored, err := b.f.g.snapshot(ctx, time.Now())
	if err != nil {
		return err
	}
	if _, expert := b.f.g.expert(name); live[name] > 0 || stored[name] || expert {
		return nil
	}
	return ErrUnknownModel
}

// errCancelled ends a publishing whose batch is being cancelled.
var errCancelled = errors.New("cancelled")

// submit records the custom_ids of a validated file, publishes its
// requests and marks the job in_progress: the job's validating stage, run
// while this gateway holds the job's publisher lease (claim), renewed
// every third of the lease. A failure fails the job; a cancel, or the
// lease taken by another gateway, stops it.
func (b *batches) submit(ctx context.Context, j jobs.Job, fileID string, rows int, l zerolog.Logger) {
	renewed := time.Now()
	keep := func() error {
		if time.Since(renewed) < b.f.cfg.PublishLease/3 {
			return nil
		}
		renewed = time.Now()
		return b.renew(ctx, j.ID)
	}
	fail := func(code string, err error) {
		l.Error().Err(err).Msg("batch submission failed")
		if _, ferr := b.f.jobs.Fail(ctx, j.ID, jobs.ErrorReport{Code: code, Message: err.Error()}); ferr != nil && !errors.Is(ferr, jobs.ErrIllegalTransition) {
			l.Error().Err(ferr).Msg("fail job")
		}
	}
	// The custom_ids first: the results sink accepts results only for them.
	var ids []string
	chunk, size := 0, 0
	flush := func() error {
		if len(ids) == 0 {
			return nil
		}
		err := b.f.jobs.PutIDs(ctx, j.ID, chunk, ids)
		chunk, ids, size = chunk+1, ids[:0], 0
		return err
	}
	err := b.f.eachLine(ctx, fileID, func(n int, data []byte) error {
		var line struct {
			CustomID string `json:"custom_id"`
		}
		if err := json.Unmarshal(data, &line); err != nil {
			return fmt.Errorf("line %d: %w", n, err)
		}
		if len(ids) == jobs.IDsChunkRows || size+len(line.CustomID)+1 > jobs.IDsChunkBytes {
			if err := flush(); err != nil {
				return err
			}
		}
		ids, size = append(ids, line.CustomID), size+len(line.CustomID)+1
		return keep()
	})
	if err == nil {
		err = flush()
	}
	switch {
	case errors.Is(err, errCancelled), errors.Is(err, errLostLease):
		l.Info().Err(err).Msg("batch publishing stopped")
		return
	case err != nil:
		fail("publish_failed", err)
		return
	}
	subj, err := pipeline.RequestSubject(j.ID, j.Model)
	if err != nil {
		fail("invalid_job", err)
		return
	}
	var rec batchRecord
	if err := readSmall(ctx, b.f.obj, storage.Batch(j.ID), &rec); err != nil {
		fail("publish_failed", err)
		return
	}
	endpoint := rec.Endpoint
	pub := b.f.g.bus.NewPublisher(1024)
	defer func() { _ = pub.Close(ctx) }()
	published := 0
	err = b.f.eachLine(ctx, fileID, func(n int, data []byte) error {
		bl, bad := parseLine(data, n, endpoint)
		if bad != nil { // the file changed since it was validated
			return fmt.Errorf("line %d: %s", n, bad.Message)
		}
		bl.req.Model, bl.req.Stream = j.Model, false
		req := schemas.Request{CustomID: bl.customID, Kind: jobs.KindCompletion, Model: j.Model, Line: n, Completion: &bl.req, Job: j.ID}
		data, _ = json.Marshal(req)
		if err := pub.Publish(ctx, subj, data, schemas.MsgID(j.ID, bl.customID), nil); err != nil {
			return err
		}
		if published++; published%1000 == 0 {
			renewed = time.Time{} // a cancel is noticed within 1000 requests
		}
		return keep()
	})
	if err == nil {
		err = pub.Flush(ctx)
	}
	switch {
	case errors.Is(err, errCancelled), errors.Is(err, errLostLease):
		l.Info().Err(err).Msg("batch publishing stopped")
		return
	case err != nil:
		fail("publish_failed", err)
		return
	}
	if _, err := b.f.jobs.Update(ctx, j.ID, func(j *jobs.Job) error {
		if j.Publisher != b.id { // another gateway took over: it finishes
			return errLostLease
		}
		if err := j.SetStatus(jobs.StatusInProgress, time.Now()); err != nil {
			return err
		}
		j.RequestCounts.Total, j.Publisher, j.PublisherUntil = rows, "", 0
		return nil
	}); err != nil {
		if !errors.Is(err, jobs.ErrIllegalTransition) && !errors.Is(err, errLostLease) { // cancelled meanwhile, or taken over
			fail("publish_failed", err)
		}
		return
	}
	if err := jobs.PublishControl(ctx, b.f.g.bus, j.ID, schemas.ControlSubmitted); err != nil {
		l.Error().Err(err).Msg("batch submitted, but its marker was not published")
		return
	}
	l.Info().Int("rows", rows).Msg("batch submitted")
}

// batchOf is the batch object of a job; rec is nil for a job the CLI submitted.
func batchOf(j jobs.Job, rec *batchRecord) Batch {
	at := func(t int64) *int64 {
		if t == 0 {
			return nil
		}
		return &t
	}
	b := Batch{ID: j.ID, Object: "batch", Endpoint: URLCompletions, Model: j.Model, InputFileID: j.InputFile,
		CompletionWindow: j.CompletionWindow, Status: string(j.Status), CreatedAt: j.CreatedAt,
		InProgressAt: at(j.InProgressAt), ExpiresAt: at(j.ExpiresAt), FinalizingAt: at(j.FinalizingAt),
		CompletedAt: at(j.CompletedAt), FailedAt: at(j.FailedAt), ExpiredAt: at(j.ExpiredAt),
		CancellingAt: at(j.CancellingAt), CancelledAt: at(j.CancelledAt),
		RequestCounts: BatchCounts(j.RequestCounts)}
	if d, err := time.ParseDuration(j.CompletionWindow); err == nil && d == 24*time.Hour {
		b.CompletionWindow = CompletionWindow24h
	}
	if rec != nil {
		b.Endpoint, b.InputFileID, b.Model, b.Metadata = rec.Endpoint, rec.InputFileID, rec.Model, rec.Metadata
	}
	if id, ok := resultFileID(j, false); ok {
		b.OutputFileID = &id
	}
	if id, ok := resultFileID(j, true); ok {
		b.ErrorFileID = &id
	}
	if len(j.Errors) > 0 {
		b.Errors = &BatchErrors{Object: "list"}
		for _, e := range j.Errors {
			be := BatchError{Code: e.Code, Message: e.Message}
			if e.Line > 0 {
				line := e.Line
				be.Line = &line
			}
			b.Errors.Data = append(b.Errors.Data, be)
		}
	}
	return b
}

// batch reads a batch: its job and record.
func (b *batches) batch(ctx context.Context, id string) (jobs.Job, *batchRecord, error) {
	j, err := b.f.jobs.Get(ctx, id)
	if err != nil {
		return j, nil, err
	}
	if j.Kind == jobs.KindTraining {
		return j, nil, fmt.Errorf("%w: %s is a fine-tuning job", jobs.ErrNotFound, id)
	}
	var rec batchRecord
	switch err := readSmall(ctx, b.f.obj, storage.Batch(id), &rec); {
	case err == nil:
		return j, &rec, nil
	case errors.Is(err, storage.ErrNotFound):
		return j, nil, nil
	default:
		return j, nil, err
	}
}

// found reads the batch of the path's id, answering 404 or 500 itself.
func (b *batches) found(w http.ResponseWriter, r *http.Request) (jobs.Job, *batchRecord, bool) {
	id := r.PathValue("id")
	j, rec, err := b.batch(r.Context(), id)
	switch {
	case errors.Is(err, jobs.ErrNotFound), errors.Is(err, jobs.ErrInvalidOption):
		errNoSuch(w, "Batch", id)
		return j, nil, false
	case err != nil:
		errServer(w, err)
		return j, nil, false
	}
	return j, rec, true
}

// get serves GET /v1/batches/{id}.
func (b *batches) get(w http.ResponseWriter, r *http.Request, _ zerolog.Logger) {
	if j, rec, ok := b.found(w, r); ok {
		writeJSON(w, http.StatusOK, batchOf(j, rec))
	}
}

// list serves GET /v1/batches (after, limit; newest first).
func (b *batches) list(w http.ResponseWriter, r *http.Request, _ zerolog.Logger) {
	ctx := r.Context()
	q := r.URL.Query()
	limit, ok := listLimit(w, q.Get("limit"), 20)
	if !ok {
		return
	}
	if limit > 100 {
		errInvalid(w, "limit", "invalid_value", "Invalid value for 'limit': %d; at most 100.", limit)
		return
	}
	js, err := b.f.jobs.List(ctx)
	if err != nil {
		errServer(w, err)
		return
	}
	out := make([]jobs.Job, 0, len(js))
	for _, j := range js {
		if j.Kind != jobs.KindTraining {
			out = append(out, j)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].CreatedAt > out[j].CreatedAt || (out[i].CreatedAt == out[j].CreatedAt && out[i].ID > out[j].ID)
	})
	p := page(out, q.Get("after"), limit, func(j jobs.Job) string { return j.ID })
	res := listPage[Batch]{Object: p.Object, FirstID: p.FirstID, LastID: p.LastID, HasMore: p.HasMore, Data: make([]Batch, 0, len(p.Data))}
	for _, j := range p.Data {
		var rec batchRecord
		rp := &rec
		if err := readSmall(ctx, b.f.obj, storage.Batch(j.ID), &rec); err != nil {
			if !errors.Is(err, storage.ErrNotFound) {
				errServer(w, err)
				return
			}
			rp = nil
		}
		res.Data = append(res.Data, batchOf(j, rp))
	}
	writeJSON(w, http.StatusOK, res)
}

// cancel serves POST /v1/batches/{id}/cancel: the job goes to cancelling
// and the results sink is told (a cancel marker); workers skip the
// requests of a cancelling job, and the sink finalises what it has, then
// cancelled. A batch already finished is a 400.
func (b *batches) cancel(w http.ResponseWriter, r *http.Request, l zerolog.Logger) {
	j, rec, ok := b.found(w, r)
	if !ok {
		return
	}
	ctx := r.Context()
	if j.Status == jobs.StatusCancelling {
		writeJSON(w, http.StatusOK, batchOf(j, rec))
		return
	}
	nj, err := b.f.jobs.Transition(ctx, j.ID, jobs.StatusCancelling, nil)
	if errors.Is(err, jobs.ErrIllegalTransition) {
		errInvalid(w, "", "invalid_state", "Cannot cancel a batch with status %s.", nj.Status)
		return
	}
	if err != nil {
		errServer(w, err)
		return
	}
	if err := jobs.PublishControl(ctx, b.f.g.bus, j.ID, schemas.ControlCancel); err != nil {
		l.Error().Err(err).Str("job", j.ID).Msg("cancel marker")
		errServer(w, err)
		return
	}
	writeJSON(w, http.StatusOK, batchOf(nj, rec))
}
