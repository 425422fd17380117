package infer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/logging"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/schemas"
)

// Proxy workers serve an expert whose §2.3 endpoint is set: they answer
// lf.rpc.<expert> and take lf.req.*.<expert> like an infer worker, and
// forward each request to the endpoint (streamed when the caller streams).
// The heartbeat in lf_workers names the expert only while the endpoint's
// health check passes, so an unreachable endpoint makes the expert not live.

// StartProxy starts a proxy worker serving the expert e (e.Endpoint set; the
// model name sent to the endpoint is e.ModelPath). timeout bounds one
// forwarded request (0: DefaultEndpointTimeout). Score rows are refused
// with an error row: an endpoint only completes.
func StartProxy(ctx context.Context, bus *pipeline.Bus, e schemas.ExpertConfig, timeout time.Duration, cfg Config, log zerolog.Logger, reg prometheus.Registerer) (*Workers, error) {
	if bus == nil {
		return nil, fmt.Errorf("%w: proxy needs a bus", ErrInvalidOption)
	}
	if err := e.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidOption, err)
	}
	if e.Endpoint == "" {
		return nil, fmt.Errorf("%w: expert %s has no endpoint", ErrInvalidOption, e.Name)
	}
	if err := pipeline.ValidToken(e.Name); err != nil {
		return nil, fmt.Errorf("%w: expert name: %w", ErrInvalidOption, err)
	}
	ep, err := NewEndpoint(e.Endpoint, e.ModelPath, timeout)
	if err != nil {
		return nil, err
	}
	env, err := openWorker(ctx, bus, cfg, reg)
	if err != nil {
		return nil, err
	}
	cfg, store, hb, met := env.cfg, env.store, env.hb, env.met
	p := &proxy{bus: bus, e: e, ep: ep, store: store, met: met, workerID: cfg.WorkerID,
		log: log.With().Str("logger", "largeforge.infer.proxy").Str("model", e.Name).Str("endpoint", ep.URL()).Logger()}
	w := &Workers{Group: pipeline.NewGroup(ctx), ID: cfg.WorkerID, models: []string{e.Name}}
	rs, err := bus.ServeRPC(w.Context(), pipeline.RPCSubject(e.Name), pipeline.RPCQueue(e.Name), p.handleRPC)
	if err != nil {
		w.Stop()
		return nil, err
	}
	c, err := requestConsumer(ctx, bus, cfg, e.Name, p, log)
	if err != nil {
		rs.Stop(false)
		w.Stop()
		return nil, err
	}
	loops := pipeline.NewGroup(w.Context())
	loops.Consume(c, cfg.Fetchers)
	beat := schemas.Heartbeat{ID: w.ID, Role: schemas.WorkerInfer, Capacity: cfg.Slots, PID: os.Getpid(), StartedAt: time.Now().Unix()}
	healthy := true
	loops.Go(func(ctx context.Context) error {
		hb.Heartbeat(ctx, HeartbeatKey(w.ID), cfg.HeartbeatEvery, func() []byte {
			err := ep.Healthy(ctx)
			if (err == nil) != healthy {
				healthy = err == nil
				p.log.Warn().Err(err).Bool("healthy", healthy).Msg("expert endpoint health changed")
			}
			beat.Models = []string{}
			if healthy {
				beat.Models = []string{e.Name}
			}
			beat.UpdatedAt = time.Now().Unix()
			data, _ := json.Marshal(beat)
			return data
		}, log)
		return nil
	})
	w.Go(func(context.Context) error {
		err := loops.Wait()
		rs.Stop(true)
		return err
	})
	return w, nil
}

// proxy forwards one expert's requests to its endpoint.
type proxy struct {
	bus      *pipeline.Bus
	e        schemas.ExpertConfig
	ep       *Endpoint
	store    *jobs.Store
	met      *Metrics
	log      zerolog.Logger
	workerID string
}

// checkContext refuses what cannot fit the expert's context (max_tokens,
// prompt plus completion) before it is forwarded: the completion alone,
// since the prompt's tokens are counted by the endpoint.
func (p *proxy) checkContext(c schemas.CompletionRequest) error {
	n := c.MaxTokens
	if n == 0 {
		n = schemas.DefaultMaxTokens
	}
	return schemas.CheckContext(1, n, p.e.MaxTokens)
}

func (p *proxy) handleRPC(ctx context.Context, req *pipeline.RPCRequest) {
	log := logging.WithRequest(p.log, req.RequestID, req.TraceID)
	sendErr := func(body schemas.RPCErrorBody) {
		data, _ := json.Marshal(body)
		_ = req.Send(pipeline.RPCError, data)
		p.met.Requests.WithLabelValues(p.e.Name, StatusError).Inc()
	}
	c, err := schemas.DecodeCompletionRequest(req.Data)
	if err == nil {
		err = c.Validate()
	}
	if err == nil {
		err = p.checkContext(c)
	}
	if err != nil {
		msg, param := schemas.ValidationMessage(err)
		sendErr(schemas.RPCErrorBody{Status: http.StatusBadRequest, Type: schemas.ErrTypeInvalidRequest, Code: "invalid_request", Param: param, Message: msg})
		return
	}
	var onText func(string)
	if c.Stream {
		onText = func(s string) { _ = req.Send(pipeline.RPCChunk, []byte(s)) }
	}
	t0 := time.Now()
	resp, err := p.ep.Complete(ctx, c, onText)
	var ee *EndpointError
	switch {
	case err != nil && ctx.Err() != nil:
		p.met.Requests.WithLabelValues(p.e.Name, StatusCancelled).Inc()
		return
	case errors.As(err, &ee):
		sendErr(ee.Body)
		return
	case err != nil:
		log.Error().Err(err).Msg("expert endpoint failed")
		sendErr(schemas.RPCErrorBody{Status: http.StatusBadGateway, Type: schemas.ErrTypeServer, Code: "endpoint_error", Message: err.Error()})
		return
	}
	p.finish(&resp, c, req.RequestID, time.Since(t0))
	data, _ := json.Marshal(resp)
	if err := req.Send(pipeline.RPCFinal, data); err != nil {
		log.Warn().Err(err).Msg("interactive reply")
	}
}

// finish names the expert in resp and counts it.
func (p *proxy) finish(resp *schemas.CompletionResponse, c schemas.CompletionRequest, id string, lat time.Duration) {
	resp.Model = p.e.Name
	if resp.ID == "" {
		resp.ID = "cmpl-" + shortHash(id+time.Now().String())
	}
	if resp.Created == 0 {
		resp.Created = time.Now().Unix()
	}
	p.met.Latency.WithLabelValues(p.e.Name).Observe(lat.Seconds())
	p.met.TokensGenerated.WithLabelValues(p.e.Name).Add(float64(resp.Usage.CompletionTokens))
	if s := lat.Seconds(); s > 0 && resp.Usage.CompletionTokens > 0 {
		p.met.TokensPerSecond.WithLabelValues(p.e.Name).Set(float64(resp.Usage.CompletionTokens) / s)
	}
	p.met.Requests.WithLabelValues(p.e.Name, StatusSuccess).Inc()
}

// Handle forwards a batch of job rows to the endpoint, concurrently, and
// publishes one result per row: the endpoint's response, or an error row
// for what the endpoint (or the expert's context) refuses with a 4xx. An
// unreachable endpoint or a 5xx is transient: the row is redelivered.
func (p *proxy) Handle(ctx context.Context, msgs []pipeline.Msg) []error {
	errs := make([]error, len(msgs))
	var wg sync.WaitGroup
	for i, m := range msgs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = p.handleOne(ctx, m)
		}()
	}
	wg.Wait()
	return errs
}

func (p *proxy) handleOne(ctx context.Context, m pipeline.Msg) error {
	start := time.Now()
	req, err := schemas.DecodeRequest(m.Data)
	if err != nil {
		if jobs.ValidID(req.Job) != nil || schemas.ValidCustomID(req.CustomID) != nil {
			return pipeline.Invalid("not a job request", err)
		}
		msg, _ := schemas.ValidationMessage(err)
		return p.publish(ctx, p.errorRow(req, schemas.CodeInvalidRequest, msg))
	}
	j, err := p.store.Get(ctx, req.Job)
	switch {
	case errors.Is(err, jobs.ErrNotFound):
		return pipeline.Invalid("job not found", fmt.Errorf("job %s", req.Job))
	case err != nil:
		return err
	case j.Status == jobs.StatusCancelling || j.Status.Terminal():
		return nil
	}
	if req.Kind == jobs.KindScore || req.Completion == nil {
		return p.publish(ctx, p.errorRow(req, schemas.CodeModelError, fmt.Sprintf("expert %s is served by an endpoint, which does not score", p.e.Name)))
	}
	c := *req.Completion
	if err := p.checkContext(c); err != nil {
		msg, _ := schemas.ValidationMessage(err)
		return p.publish(ctx, p.errorRow(req, schemas.CodeModelError, msg))
	}
	resp, err := p.ep.Complete(ctx, c, nil)
	var ee *EndpointError
	switch {
	case errors.As(err, &ee) && ee.Status/100 == 4:
		return p.publish(ctx, p.errorRow(req, schemas.CodeModelError, ee.Body.Message))
	case err != nil:
		p.met.Requests.WithLabelValues(p.e.Name, StatusRetry).Inc()
		return fmt.Errorf("forward %s: %w", schemas.MsgID(req.Job, req.CustomID), err)
	}
	p.finish(&resp, c, schemas.MsgID(req.Job, req.CustomID), time.Since(start))
	r, err := schemas.NewResult(req.Job, req.CustomID, p.e.Name, req.Kind, req.Line, resp)
	if err != nil {
		return pipeline.Invalid("result not encodable", err)
	}
	r.LatencyMS, r.Worker = float64(time.Since(start).Microseconds())/1000, p.workerID
	return p.publish(ctx, &r)
}

func (p *proxy) errorRow(req schemas.Request, code, msg string) *schemas.Result {
	r := schemas.ErrorResult(req.Job, req.CustomID, p.e.Name, req.Kind, req.Line, code, msg)
	r.Worker = p.workerID
	return &r
}

func (p *proxy) publish(ctx context.Context, r *schemas.Result) error {
	subj, err := pipeline.ResultSubject(r.Job)
	if err != nil {
		return pipeline.Invalid("bad job id", err)
	}
	data, err := json.Marshal(r)
	if err != nil {
		return pipeline.Invalid("result not encodable", err)
	}
	if _, err := p.bus.Publish(ctx, subj, data, schemas.MsgID(r.Job, r.CustomID), nil); err != nil {
		return err
	}
	if r.Error != nil {
		p.met.Requests.WithLabelValues(p.e.Name, StatusError).Inc()
	}
	return nil
}
