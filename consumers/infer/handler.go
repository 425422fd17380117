// Package infer is the batch inference and scoring worker: a pipeline.Handler
// per served model that takes the requests of lf.req.<job>.<model>, runs them
// on the model (completions through its continuous Batcher, every message of
// a fetched batch at once so the batch fills; score rows through one batched
// Model.Score call) and publishes one Result per request on lf.res.<job> with
// Nats-Msg-Id <job>/<custom_id>. A message is acked only after its result is
// acked by the stream.
//
// A request that breaks the dictionary's rules, or that the model rejects
// (too long for its context), gets an error row and is acked. A failure of
// the model or the bus is transient: the message is redelivered, and after
// MaxDeliver it goes to LF_DLQ, which the results sink turns into an error row.
package infer

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/model"
	"github.com/largeforge/largeforge/model/tokenizer"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/schemas"
	"github.com/largeforge/largeforge/serve"
)

// ErrInvalidOption is wrapped by constructor errors.
var ErrInvalidOption = errors.New("invalid infer option")

// Stage names the DLQ subjects of this worker: lf.dlq.infer.<job>.
const Stage = "infer"

// Served is a loaded model a worker serves under a name.
type Served struct {
	Name    string // the <model> of lf.req.<job>.<model>
	Model   *model.Model
	Tok     *tokenizer.Tokenizer
	Batcher *model.Batcher // running (its Run loop started by the caller)
	// Scorer scores the score rows (nil: Model; a LoRA adapter's
	// scorer for an adapter served unmerged).
	Scorer serve.Scorer
}

// Handler runs one model's requests.
type Handler struct {
	bus      *pipeline.Bus
	s        Served
	gen      *model.TextGenerator
	store    *jobs.Store
	met      *Metrics
	log      zerolog.Logger
	workerID string

	mu     sync.Mutex
	status map[string]statusEntry // job → status, cached briefly
}

type statusEntry struct {
	status jobs.Status
	found  bool
	at     time.Time
}

// statusTTL is how long a job's status is cached: a cancel is seen within it.
const statusTTL = time.Second

// NewHandler returns the handler of one served model. met may be nil.
func NewHandler(bus *pipeline.Bus, s Served, store *jobs.Store, met *Metrics, workerID string, log zerolog.Logger) (*Handler, error) {
	if bus == nil || store == nil || s.Model == nil || s.Tok == nil || s.Batcher == nil {
		return nil, fmt.Errorf("%w: handler needs a bus, a job store, a model, its tokenizer and a batcher", ErrInvalidOption)
	}
	if err := pipeline.ValidToken(s.Name); err != nil {
		return nil, fmt.Errorf("%w: model name: %w", ErrInvalidOption, err)
	}
	gen, err := model.NewTextGenerator(s.Model, s.Tok)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidOption, err)
	}
	if met == nil {
		met, _ = NewMetrics(nil)
	}
	if s.Scorer == nil {
		s.Scorer = s.Model
	}
	return &Handler{bus: bus, s: s, gen: gen, store: store, met: met, workerID: workerID,
		log: log.With().Str("logger", "largeforge.infer").Str("model", s.Name).Logger(), status: map[string]statusEntry{}}, nil
}

// jobStatus returns the job's status, cached for statusTTL.
func (h *Handler) jobStatus(ctx context.Context, job string) (jobs.Status, bool, error) {
	h.mu.Lock()
	e, ok := h.status[job]
	h.mu.Unlock()
	if ok && time.Since(e.at) < statusTTL {
		return e.status, e.found, nil
	}
	j, err := h.store.Get(ctx, job)
	found := err == nil
	if err != nil && !errors.Is(err, jobs.ErrNotFound) {
		return "", false, err
	}
	h.mu.Lock()
	if len(h.status) > 10000 {
		clear(h.status)
	}
	h.status[job] = statusEntry{status: j.Status, found: found, at: time.Now()}
	h.mu.Unlock()
	return j.Status, found, nil
}

// item is one message of a batch on its way.
type item struct {
	msg   pipeline.Msg
	req   schemas.Request
	start time.Time
	res   *schemas.Result // set when done
	err   error           // the outcome for the consume loop when res is nil
}

// Handle runs a batch: every completion goes to the Batcher at once, the
// score rows go to the model together; then each result is published and
// each message's outcome returned.
func (h *Handler) Handle(ctx context.Context, msgs []pipeline.Msg) []error {
	start := time.Now()
	items := make([]*item, len(msgs))
	var scores []*item
	var wg sync.WaitGroup
	var tokens int64
	var tokMu sync.Mutex
	// Each job of the batch runs under a context of its own, cancelled when
	// the job is cancelled meanwhile: its generations stop.
	jobCtx := map[string]context.Context{}
	jobCancel := map[string]context.CancelFunc{}
	for i, m := range msgs {
		it := &item{msg: m, start: start}
		items[i] = it
		if !h.prepare(ctx, it) {
			continue
		}
		if it.req.Kind == jobs.KindScore {
			scores = append(scores, it)
			continue
		}
		jctx, ok := jobCtx[it.req.Job]
		if !ok {
			jctx, jobCancel[it.req.Job] = context.WithCancel(ctx)
			jobCtx[it.req.Job] = jctx
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := h.complete(ctx, jctx, it)
			tokMu.Lock()
			tokens += int64(n)
			tokMu.Unlock()
		}()
	}
	stopWatch := h.watchCancel(ctx, jobCancel)
	if len(scores) > 0 {
		h.score(ctx, scores)
	}
	wg.Wait()
	stopWatch()
	for _, cancel := range jobCancel {
		cancel()
	}
	if el := time.Since(start).Seconds(); tokens > 0 && el > 0 {
		h.met.TokensPerSecond.WithLabelValues(h.s.Name).Set(float64(tokens) / el)
	}

	// Publish every result concurrently and wait for the acks.
	errs := make([]error, len(items))
	for i, it := range items {
		if it.res == nil {
			errs[i] = it.err
			if it.err != nil && !errors.Is(it.err, pipeline.ErrInvalid) {
				h.met.Requests.WithLabelValues(h.s.Name, StatusRetry).Inc()
			}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = h.publish(ctx, it)
		}()
	}
	wg.Wait()
	return errs
}

// watchCancel polls the status of the batch's jobs while it runs and calls a
// job's cancel function when the job is cancelled. It returns the function
// that stops the polling.
func (h *Handler) watchCancel(ctx context.Context, cancels map[string]context.CancelFunc) func() {
	if len(cancels) == 0 {
		return func() {}
	}
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(statusTTL)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			for job, cancel := range cancels {
				if st, _, err := h.jobStatus(ctx, job); err == nil && (st == jobs.StatusCancelling || st.Terminal()) {
					cancel()
				}
			}
		}
	}()
	return func() { close(done); <-stopped }
}

// prepare decodes a message; false when it is settled already (it.err or
// it.res set).
func (h *Handler) prepare(ctx context.Context, it *item) bool {
	req, err := schemas.DecodeRequest(it.msg.Data)
	it.req = req
	if err != nil {
		if jobs.ValidID(req.Job) != nil || schemas.ValidCustomID(req.CustomID) != nil {
			it.err = pipeline.Invalid("not a job request", err)
			return false
		}
		msg, _ := schemas.ValidationMessage(err)
		it.res = h.errorRow(req, schemas.CodeInvalidRequest, msg)
		return false
	}
	status, found, err := h.jobStatus(ctx, req.Job)
	switch {
	case err != nil:
		it.err = err
		return false
	case !found:
		it.err = pipeline.Invalid("job not found", fmt.Errorf("job %s", req.Job))
		return false
	case status == jobs.StatusCancelling || status.Terminal():
		// Cancelled (or otherwise over): drop the request.
		it.err = nil
		return false
	}
	return true
}

func (h *Handler) errorRow(req schemas.Request, code, msg string) *schemas.Result {
	r := schemas.ErrorResult(req.Job, req.CustomID, h.s.Name, req.Kind, req.Line, code, msg)
	r.Worker = h.workerID
	return &r
}

// seed is the seed of a request that has none, derived from its id so that
// a redelivered request samples the same text.
func seed(req schemas.Request) int64 {
	sum := sha256.Sum256([]byte(schemas.MsgID(req.Job, req.CustomID)))
	return int64(binary.LittleEndian.Uint64(sum[:8]) >> 1)
}

// complete runs one completion on the Batcher under jctx (the job's context,
// a child of the handler's ctx); it returns the tokens generated.
func (h *Handler) complete(ctx, jctx context.Context, it *item) int {
	c := *it.req.Completion
	tr, err := serve.TextRequest(h.s.Tok, c, seed(it.req))
	if err != nil {
		it.res = h.errorRow(it.req, schemas.CodeInvalidRequest, err.Error())
		return 0
	}
	active := h.met.Active.WithLabelValues(h.s.Name)
	active.Inc()
	t0 := time.Now()
	out, err := h.gen.Submit(jctx, h.s.Batcher, tr, nil)
	active.Dec()
	if err != nil && jctx.Err() != nil && ctx.Err() == nil {
		// The job was cancelled during generation: drop the request (ack, no row).
		return 0
	}
	if err != nil {
		if serve.Refused(err) {
			it.res = h.errorRow(it.req, schemas.CodeModelError, err.Error())
			return 0
		}
		it.err = fmt.Errorf("generate %s: %w", schemas.MsgID(it.req.Job, it.req.CustomID), err)
		return 0
	}
	lat := time.Since(t0)
	h.met.Latency.WithLabelValues(h.s.Name).Observe(lat.Seconds())
	h.met.TokensGenerated.WithLabelValues(h.s.Name).Add(float64(out.CompletionTokens))
	resp := serve.Response("cmpl-"+shortHash(schemas.MsgID(it.req.Job, it.req.CustomID)), h.s.Name, c, out)
	h.done(it, resp)
	return out.CompletionTokens
}

func shortHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:12])
}

// score runs the batch's score rows together (serve.Score: a row the model
// refuses fails alone) and logs their rate (rows/s, tokens/s).
func (h *Handler) score(ctx context.Context, items []*item) {
	rows := make([]schemas.ScoreInput, len(items))
	for i, it := range items {
		rows[i] = *it.req.Score
	}
	active := h.met.Active.WithLabelValues(h.s.Name)
	active.Add(float64(len(items)))
	defer active.Sub(float64(len(items)))
	t0 := time.Now()
	outs, errs, rate := serve.ScoreRated(ctx, h.s.Scorer, h.s.Tok, rows)
	lat := time.Since(t0)
	h.log.Info().Int("rows", rate.Rows).Int("tokens", rate.Tokens).
		Float64("rows_per_second", rate.RowsPerSecond()).Float64("tokens_per_second", rate.TokensPerSecond()).
		Msg("score batch")
	for i, it := range items {
		switch err := errs[i]; {
		case serve.Refused(err):
			it.res = h.errorRow(it.req, schemas.CodeModelError, err.Error())
			continue
		case err != nil:
			it.err = fmt.Errorf("score %s: %w", schemas.MsgID(it.req.Job, it.req.CustomID), err)
			continue
		}
		h.met.Latency.WithLabelValues(h.s.Name).Observe(lat.Seconds())
		h.done(it, outs[i])
	}
}

// done sets the item's result: body (its CompletionResponse or ScoreOutput)
// encoded once, here; the sink carries those bytes to output.jsonl.
func (h *Handler) done(it *item, body any) {
	r, err := schemas.NewResult(it.req.Job, it.req.CustomID, h.s.Name, it.req.Kind, it.req.Line, body)
	if err != nil {
		it.err = pipeline.Invalid("result not encodable", err)
		return
	}
	r.LatencyMS, r.Worker = float64(time.Since(it.start).Microseconds())/1000, h.workerID
	it.res = &r
}

// publish sends a result and waits for the stream's ack.
func (h *Handler) publish(ctx context.Context, it *item) error {
	subj, err := pipeline.ResultSubject(it.res.Job)
	if err != nil {
		return pipeline.Invalid("bad job id", err)
	}
	data := it.res.AppendJSON(make([]byte, 0, 256+len(it.res.Response)+len(it.res.Score)))
	id, hdr := resultID(it)
	if _, err := h.bus.Publish(ctx, subj, data, id, hdr); err != nil {
		h.met.Requests.WithLabelValues(h.s.Name, StatusRetry).Inc()
		return err
	}
	status := StatusSuccess
	if it.res.Error != nil {
		status = StatusError
	}
	h.met.Requests.WithLabelValues(h.s.Name, status).Inc()
	return nil
}
