// Package gateway is the OpenAI-compatible HTTP gateway. It holds no model:
// each completion goes over the bus to a worker serving the model
// (pipeline.StreamRPC on lf.rpc.<model>), and streamed tokens come back to
// the client as server-sent events. A client that disconnects cancels its
// generation.
//
// Routes:
//
//	POST /v1/completions        §3.1 → §3.2 (stream: SSE chunks, then data: [DONE])
//	POST /v1/chat/completions   messages → choices[].message (stream: delta chunks)
//	GET  /v1/models             the models live workers serve (lf_workers)
//	GET  /v1/models/{id}        one model (live, stored in lf_models, or an expert), else 404
//	/v1/fine_tuning/jobs/...    the Fine-tuning API over the bus training jobs (fine_tuning.go)
//	POST /v1/route              {"prompt"} or {"messages"} → §3.5 RouteResponse and the deciding stage
//	/v1/files, /v1/files/{id}[/content]   the OpenAI Files API over lf_artifacts (files.go)
//	/v1/batches, /v1/batches/{id}[/cancel] the OpenAI Batches API over the bus jobs (batches.go)
//	GET  /health                §3.6 HealthResponse
//	GET  /ready                 200 once connected to the bus (readiness probe), else 503
//	GET  /metrics               Prometheus (when New is given a Gatherer)
//	/console/                   the web console (package console; its data endpoints take the API key)
//
// Errors are OpenAI-style {"error":{"message","type","param","code"}}: 400
// with the §7.1 messages for invalid requests, 404 for an unknown model, 413
// for a body over MaxBodyBytes, 503 when no worker of a known model answers
// within WorkerWait, 401 without a valid API key when keys are configured
// (Authorization: Bearer <key>; /health and /metrics need none). Every
// response carries x-request-id (the client's, or a new one); the logs carry
// it as request_id, and trace_id from traceparent.
//
// Model "auto" goes through the routing.Router (rules, then the learned classifier of
// Config.Classifier for what no rule decides) over the experts of
// Config.Experts and the lf_experts bucket (changes apply live); an expert is
// served by the workers of the model with its name. Decisions are counted in
// the §5.4 metrics (routing_latency_seconds is labelled by the deciding
// stage: rules, classifier or default) and published to LF_ROUTES on
// lf.route.interactive.
//
// Health rules: the "bus" component is healthy while the NATS connection is
// up, else unhealthy. Each model (served by a live worker, stored in
// lf_models, or an expert) is a component "model:<name>" with details.live_workers; it is
// healthy with at least one live worker, unhealthy with none. Overall:
// unhealthy when the bus is down or no model has a live worker; degraded
// when some model has none; else healthy. /health answers 200 unless
// unhealthy (503).
package gateway

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/largeforge/largeforge/logging"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/routing"
	"github.com/largeforge/largeforge/routing/classifier"
	"github.com/largeforge/largeforge/schemas"
	"github.com/largeforge/largeforge/storage/modelstore"
)

// Config defaults.
const (
	DefaultMaxBodyBytes = 1 << 20
	DefaultWorkerWait   = 5 * time.Second
	DefaultRefreshEvery = time.Second
)

// Config configures a Gateway.
type Config struct {
	Addr         string        // listen address for Run, e.g. ":8080"
	MaxBodyBytes int64         // request body limit (default 1 MiB)
	WorkerWait   time.Duration // how long a request waits for a worker of a known model before 503 (default 5s)
	Idle         time.Duration // longest silence of a worker mid-request (default pipeline.DefaultRPCIdle)
	RefreshEvery time.Duration // how long the live-worker and model lists are cached (default 1s)
	Version      string        // reported by /health
	// Experts, when set, enable model "auto" and POST /v1/route through
	// the Router.
	Experts []schemas.ExpertConfig
	// Classifier, when set, is the Router's learned stage (for prompts no
	// rule decides). The gateway does not close it.
	Classifier *classifier.Classifier
	// APIKeys, when set, are the bearer tokens the /v1 routes accept
	// (compared in constant time; 401 otherwise). /health and /metrics stay
	// open.
	APIKeys []string
	// MaxConnections caps the connections served at once; more wait until
	// one closes (default DefaultMaxConnections).
	MaxConnections int
	// MinBodyRate is the least average rate, in bytes per second, at which
	// a request body must arrive once BodyGrace has passed; a slower body is
	// cut off with 408 (defaults DefaultMinBodyRate, DefaultBodyGrace).
	MinBodyRate int64
	BodyGrace   time.Duration
	// Files configures the Files and Batches APIs (files.go, batches.go).
	Files FilesConfig
}

// Validate checks the config; errors wrap ErrInvalidOption.
func (c Config) Validate() error {
	if c.MaxBodyBytes < 0 {
		return fmt.Errorf("%w: max body bytes %d is negative", ErrInvalidOption, c.MaxBodyBytes)
	}
	for i, k := range c.APIKeys {
		if len(k) < 8 || strings.TrimSpace(k) != k {
			return fmt.Errorf("%w: api key %d: want at least 8 characters and no surrounding space", ErrInvalidOption, i)
		}
	}
	if c.MaxConnections < 0 || c.MinBodyRate < 0 {
		return fmt.Errorf("%w: max connections %d and min body rate %d must not be negative", ErrInvalidOption, c.MaxConnections, c.MinBodyRate)
	}
	for name, v := range map[string]time.Duration{"worker wait": c.WorkerWait, "idle": c.Idle, "refresh": c.RefreshEvery, "body grace": c.BodyGrace} {
		if v < 0 {
			return fmt.Errorf("%w: %s %v is negative", ErrInvalidOption, name, v)
		}
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.WorkerWait == 0 {
		c.WorkerWait = DefaultWorkerWait
	}
	if c.Idle == 0 {
		c.Idle = pipeline.DefaultRPCIdle
	}
	if c.RefreshEvery == 0 {
		c.RefreshEvery = DefaultRefreshEvery
	}
	if c.Version == "" {
		c.Version = "dev"
	}
	if c.MaxConnections == 0 {
		c.MaxConnections = DefaultMaxConnections
	}
	if c.MinBodyRate == 0 {
		c.MinBodyRate = DefaultMinBodyRate
	}
	if c.BodyGrace == 0 {
		c.BodyGrace = DefaultBodyGrace
	}
	return c
}

// Gateway is the HTTP gateway.
type Gateway struct {
	bus     *pipeline.Bus
	cfg     Config
	log     zerolog.Logger
	met     *Metrics
	workers *pipeline.KV
	models  *pipeline.Objects
	mux     *http.ServeMux
	started time.Time
	router  atomic.Pointer[routing.Router] // nil without experts
	experts *pipeline.KV                   // lf_experts
	keys    [][32]byte                     // SHA-256 of the API keys
	batches *batches                       // resumes batches left validating while serving

	mu        sync.Mutex
	live      map[string]int // model → live workers
	stored    map[string]bool
	refreshed time.Time
}

// New returns a gateway over bus. reg receives its metrics; gather, when not
// nil, is served on /metrics.
func New(ctx context.Context, bus *pipeline.Bus, cfg Config, log zerolog.Logger, reg prometheus.Registerer, gather prometheus.Gatherer) (*Gateway, error) {
	if bus == nil {
		return nil, fmt.Errorf("%w: gateway needs a bus", ErrInvalidOption)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	met, err := NewMetrics(reg)
	if err != nil {
		return nil, err
	}
	kv, err := bus.KV(ctx, pipeline.BucketWorkers)
	if err != nil {
		return nil, err
	}
	os, err := bus.Objects(ctx, pipeline.BucketModels)
	if err != nil {
		return nil, err
	}
	ekv, err := bus.KV(ctx, pipeline.BucketExperts)
	if err != nil {
		return nil, err
	}
	g := &Gateway{bus: bus, cfg: cfg.withDefaults(), log: logging.Named(log, "largeforge.gateway"), met: met,
		workers: kv, models: os, experts: ekv, mux: http.NewServeMux(), started: time.Now()}
	for _, k := range cfg.APIKeys {
		g.keys = append(g.keys, sha256.Sum256([]byte(k)))
	}
	g.handle("POST /v1/completions", "/v1/completions", func(w http.ResponseWriter, r *http.Request, l zerolog.Logger) {
		g.complete(w, r, l, false)
	})
	g.handle("POST /v1/chat/completions", "/v1/chat/completions", func(w http.ResponseWriter, r *http.Request, l zerolog.Logger) {
		g.complete(w, r, l, true)
	})
	g.handle("GET /v1/models", "/v1/models", g.listModels)
	g.handle("GET /v1/models/{id...}", "/v1/models/{id}", g.getModel)
	if err := g.registerFineTuning(ctx); err != nil {
		return nil, err
	}
	g.handle("POST /v1/route", "/v1/route", g.routeHandler)
	if len(cfg.Experts) > 0 {
		r, err := routing.New(cfg.Experts, g.routerOptions()...)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidOption, err)
		}
		g.router.Store(r)
	}
	if err := g.registerFiles(ctx, cfg.Files); err != nil {
		return nil, err
	}
	g.handle("GET /health", "/health", g.health)
	if err := g.mountConsole(); err != nil {
		return nil, err
	}
	g.handle("GET /ready", "/ready", g.ready)
	if gather != nil {
		g.mux.Handle("GET /metrics", promhttp.HandlerFor(gather, promhttp.HandlerOpts{}))
	}
	g.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "invalid_request_error", "", "not_found", fmt.Sprintf("Unknown path %s %s", r.Method, r.URL.Path))
	})
	return g, nil
}

// routerOptions are the options of every router the gateway builds.
func (g *Gateway) routerOptions() []routing.Option {
	if g.cfg.Classifier == nil {
		return nil
	}
	return []routing.Option{routing.WithClassifier(g.cfg.Classifier)}
}

// Handler is the gateway's http.Handler.
func (g *Gateway) Handler() http.Handler { return g.mux }

// Run listens on Config.Addr and serves until ctx ends, then shuts down
// gracefully (at most 10s).
func (g *Gateway) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", g.cfg.Addr)
	if err != nil {
		return fmt.Errorf("gateway listen %s: %w", g.cfg.Addr, err)
	}
	return g.Serve(ctx, ln)
}

// Serve serves on ln until ctx ends, at most Config.MaxConnections
// connections at once. Headers must arrive within
// DefaultReadHeaderTimeout and bodies at Config.MinBodyRate; responses have
// no write timeout, so streams keep going.
func (g *Gateway) Serve(ctx context.Context, ln net.Listener) error {
	ln = newLimitListener(ln, g.cfg.MaxConnections)
	srv := &http.Server{Handler: g.mux, ReadHeaderTimeout: DefaultReadHeaderTimeout, IdleTimeout: DefaultIdleTimeout,
		BaseContext: func(net.Listener) context.Context { return context.WithoutCancel(ctx) }}
	g.log.Info().Str("addr", ln.Addr().String()).Msg("gateway listening")
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	if err := g.watchExperts(wctx); err != nil {
		return err
	}
	go g.batches.resumeLoop(wctx)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("gateway serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	<-errc
	return nil
}

// statusWriter records the status and bytes of a response.
type statusWriter struct {
	http.ResponseWriter
	code   int
	model  string // logged with the request
	tokens int    // completion tokens generated, logged as tokens_generated
}

func (s *statusWriter) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// handle registers a route with request ids, logging and metrics.
func (g *Gateway) handle(pattern, path string, h func(http.ResponseWriter, *http.Request, zerolog.Logger)) {
	g.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := r.Header.Get("X-Request-Id")
		if id == "" || len(id) > 128 {
			id = newID()
		}
		w.Header().Set("X-Request-Id", id)
		l := logging.WithRequest(g.log, id, TraceID(r.Header.Get("Traceparent")))
		sw := &statusWriter{ResponseWriter: w}
		g.met.Active.Inc()
		if strings.HasPrefix(path, "/v1/") && !g.authorized(r) {
			writeError(sw, http.StatusUnauthorized, "invalid_request_error", "", "invalid_api_key", "Invalid API key")
		} else {
			r2 := r.WithContext(withRequestID(r.Context(), id))
			if r.Body != nil && r.Body != http.NoBody {
				r2.Body = newRateBody(w, r.Body, g.cfg.MinBodyRate, g.cfg.BodyGrace)
			}
			h(sw, r2, l)
		}
		g.met.Active.Dec()
		if sw.code == 0 {
			sw.code = http.StatusOK
		}
		el := time.Since(start)
		g.met.Requests.WithLabelValues(path, fmt.Sprint(sw.code)).Inc()
		g.met.Duration.WithLabelValues(path).Observe(el.Seconds())
		ev := l.Info()
		if sw.code >= 500 {
			ev = l.Error()
		}
		if sw.model != "" {
			ev = ev.Str("model", sw.model).Int("tokens_generated", sw.tokens)
		}
		ev.Int("status", sw.code).Str("path", path).Float64("latency_ms", float64(el.Microseconds())/1000).Msg("Request completed")
	})
}

// authorized reports whether r carries one of the API keys as a bearer
// token, the scheme in any case (always true without keys). Every key is compared, in constant time
// over fixed-length digests.
func (g *Gateway) authorized(r *http.Request) bool {
	if len(g.keys) == 0 {
		return true
	}
	scheme, tok, _ := strings.Cut(strings.TrimSpace(r.Header.Get("Authorization")), " ")
	ok := strings.EqualFold(scheme, "Bearer")
	sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	match := 0
	for _, k := range g.keys {
		match |= subtle.ConstantTimeCompare(sum[:], k[:])
	}
	return ok && match == 1
}

type ctxKey struct{}

func withRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, ctxKey{}, id)
}

func requestID(ctx context.Context) string {
	id, _ := ctx.Value(ctxKey{}).(string)
	return id
}

func newID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "req-" + hex.EncodeToString(b[:])
}

// TraceID returns the trace id of a W3C traceparent header
// ("00-<32 hex>-<16 hex>-<2 hex>"), or "" when it is absent or malformed.
func TraceID(traceparent string) string {
	parts := strings.Split(strings.TrimSpace(traceparent), "-")
	if len(parts) < 4 || len(parts[0]) != 2 || len(parts[1]) != 32 || len(parts[2]) != 16 || len(parts[3]) != 2 {
		return ""
	}
	if _, err := hex.DecodeString(parts[1]); err != nil || parts[1] == strings.Repeat("0", 32) {
		return ""
	}
	return strings.ToLower(parts[1])
}

// apiError is the OpenAI error object.
type apiError struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, typ, param, code, msg string) {
	e := apiError{Message: msg, Type: typ}
	if param != "" {
		e.Param = &param
	}
	if code != "" {
		e.Code = &code
	}
	writeJSON(w, status, map[string]apiError{"error": e})
}

// complete serves /v1/completions (chat false) and /v1/chat/completions.
func (g *Gateway) complete(w http.ResponseWriter, r *http.Request, l zerolog.Logger, chat bool) {
	body, err := readBody(w, r, g.cfg.MaxBodyBytes)
	if err != nil {
		g.bodyError(w, err)
		return
	}
	body, opts, err := NormalizeRequest(body, chat)
	var req schemas.CompletionRequest
	if err == nil {
		req, err = schemas.DecodeCompletionRequest(body)
	}
	if err == nil {
		err = checkRequest(req, opts, chat)
	}
	var pe *ParamError
	if errors.As(err, &pe) {
		writeParamError(w, pe)
		return
	}
	if err != nil {
		msg, param := schemas.ValidationMessage(err)
		writeError(w, http.StatusBadRequest, "invalid_request_error", param, "invalid_request", msg)
		return
	}
	if req.Model == routing.AutoModel && g.router.Load() != nil {
		d, err := g.route(r.Context(), routing.RouteText(req))
		if err != nil {
			g.modelError(w, req.Model, err)
			return
		}
		req.Model = d.Expert
		w.Header().Set("X-Largeforge-Expert", d.Expert)
	}
	if e, ok := g.expert(req.Model); ok {
		// The expert's max_tokens is its context: the completion alone must
		// leave room for a prompt; its worker counts the prompt too.
		if err := schemas.CheckContext(1, req.MaxTokens, e.MaxTokens); err != nil {
			msg, param := schemas.ValidationMessage(err)
			writeError(w, http.StatusBadRequest, "invalid_request_error", param, "invalid_request", msg)
			return
		}
	}
	l = logging.Context(l, map[string]any{"model": req.Model})
	if sw, ok := w.(*statusWriter); ok {
		sw.model = req.Model
	}
	ctx := r.Context()
	if err := g.waitForModel(ctx, req.Model); err != nil {
		g.modelError(w, req.Model, err)
		return
	}
	call := pipeline.RPCCall{Subject: pipeline.RPCSubject(req.Model), RequestID: requestID(ctx), // Data: each choice's request (generate)
		TraceID: TraceID(r.Header.Get("Traceparent")), Idle: g.cfg.Idle}
	var sse *sseWriter
	if req.Stream {
		sse = &sseWriter{w: w, rc: http.NewResponseController(w), chat: chat, model: req.Model, created: time.Now().Unix(),
			id: completionID(chat, call.RequestID), includeUsage: opts.IncludeUsage}
	}
	finals, err := g.generate(ctx, call, choiceRequests(req, opts), sse)
	switch {
	case errors.Is(err, pipeline.ErrNoResponders):
		g.modelError(w, req.Model, ErrNoWorker)
		return
	case ctx.Err() != nil:
		l.Info().Msg("client went away; generation cancelled")
		return
	case err != nil:
		status, e := http.StatusBadGateway, apiError{Type: "server_error", Message: err.Error()}
		var f *pipeline.RPCFailure
		if errors.As(err, &f) {
			var eb schemas.RPCErrorBody
			if json.Unmarshal(f.Body, &eb) == nil && eb.Status != 0 {
				status, e = eb.Status, apiError{Type: eb.Type, Message: eb.Message}
				if eb.Code != "" {
					e.Code = &eb.Code
				}
				if eb.Param != "" {
					e.Param = &eb.Param
				}
			}
		}
		if errors.Is(err, pipeline.ErrRPCTimeout) {
			status = http.StatusGatewayTimeout
		}
		if sse != nil && sse.started {
			_ = sse.event(map[string]apiError{"error": e})
			return
		}
		writeJSON(w, status, map[string]apiError{"error": e})
		return
	}
	resp, err := mergeChoices(finals, opts.N)
	if err != nil {
		writeError(w, http.StatusBadGateway, "server_error", "", "bad_reply", "worker reply: "+err.Error())
		return
	}
	if sw, ok := w.(*statusWriter); ok {
		sw.tokens = resp.Usage.CompletionTokens
	}
	if sse != nil {
		sse.finish(resp)
		return
	}
	if chat {
		writeJSON(w, http.StatusOK, chatCompletionOf(resp))
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

// expert returns the expert of that name, when the router has one.
func (g *Gateway) expert(name string) (schemas.ExpertConfig, bool) {
	if r := g.router.Load(); r != nil {
		for _, e := range r.Experts() {
			if e.Name == name {
				return e, true
			}
		}
	}
	return schemas.ExpertConfig{}, false
}

// route runs the router over the live experts, counts the decision and
// publishes it to LF_ROUTES (lf.route.interactive) in the background.
func (g *Gateway) route(ctx context.Context, text string) (schemas.RouteDecision, error) {
	live, _, err := g.snapshot(ctx, time.Time{})
	if err != nil {
		return schemas.RouteDecision{}, err
	}
	router := g.router.Load()
	if router == nil {
		return schemas.RouteDecision{}, ErrUnknownModel
	}
	for _, e := range router.Experts() {
		v := 0.0
		if live[e.Name] > 0 {
			v = 1
		}
		g.met.ExpertAvailability.WithLabelValues(e.Name).Set(v)
	}
	t0 := time.Now()
	d, err := router.Route(text, func(name string) bool { return live[name] > 0 })
	if err != nil {
		g.met.RoutingLatency.WithLabelValues(routing.StageRules).Observe(time.Since(t0).Seconds())
		return schemas.RouteDecision{}, err
	}
	g.met.RoutingLatency.WithLabelValues(d.Stage).Observe(time.Since(t0).Seconds())
	g.met.RoutingDecisions.WithLabelValues(d.Expert).Inc()
	rec := schemas.RouteRecord{RequestID: requestID(ctx), RouteDecision: d, At: time.Now().UTC().Format(time.RFC3339Nano)}
	go func() {
		data, _ := json.Marshal(rec)
		subj, _ := pipeline.RouteSubject(RouteJobInteractive)
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, err := g.bus.Publish(pctx, subj, data, rec.RequestID, nil); err != nil {
			g.log.Warn().Err(err).Msg("publish routing decision")
		}
	}()
	return d, nil
}

// RouteJobInteractive is the <job> token of interactive decisions in
// LF_ROUTES: lf.route.interactive.
const RouteJobInteractive = "interactive"

// routeHandler serves POST /v1/route: {"prompt": ...} or {"messages": [...]}
// → the §3.5 RouteResponse (and the deciding stage), without generating.
func (g *Gateway) routeHandler(w http.ResponseWriter, r *http.Request, _ zerolog.Logger) {
	if g.router.Load() == nil {
		writeError(w, http.StatusNotFound, "invalid_request_error", "", "no_experts", "No experts are configured")
		return
	}
	body, err := readBody(w, r, g.cfg.MaxBodyBytes)
	if err != nil {
		g.bodyError(w, err)
		return
	}
	req, err := schemas.DecodeCompletionRequest(body)
	if err == nil && req.Prompt == "" && !req.IsChat() {
		err = fmt.Errorf("%w: prompt or messages required", schemas.ErrInvalidRequest)
	}
	if err != nil {
		msg, param := schemas.ValidationMessage(err)
		writeError(w, http.StatusBadRequest, "invalid_request_error", param, "invalid_request", msg)
		return
	}
	d, err := g.route(r.Context(), routing.RouteText(req))
	if err != nil {
		g.modelError(w, routing.AutoModel, err)
		return
	}
	writeJSON(w, http.StatusOK, d)
}

func completionID(chat bool, id string) string {
	if chat {
		return "chatcmpl-" + id
	}
	return "cmpl-" + id
}

// bodyError answers a body that could not be read: 413 over the limit, 408
// under the minimum rate, else 400.
func (g *Gateway) bodyError(w http.ResponseWriter, err error) {
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		writeError(w, http.StatusRequestEntityTooLarge, "invalid_request_error", "", "request_too_large", fmt.Sprintf("Request body over %d bytes", g.cfg.MaxBodyBytes))
	case errors.Is(err, ErrBodyTooSlow):
		writeError(w, http.StatusRequestTimeout, "invalid_request_error", "", "request_timeout", fmt.Sprintf("Request body arrived under %d bytes per second", g.cfg.MinBodyRate))
	default:
		writeError(w, http.StatusBadRequest, "invalid_request_error", "", "invalid_request", "Cannot read the request body: "+err.Error())
	}
}

func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	var buf bytes.Buffer
	_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, limit))
	return buf.Bytes(), err
}

func (g *Gateway) modelError(w http.ResponseWriter, name string, err error) {
	switch {
	case errors.Is(err, ErrUnknownModel):
		writeError(w, http.StatusNotFound, "invalid_request_error", "", "model_not_found", modelNotFound(name))
	case errors.Is(err, ErrNoWorker):
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "server_error", "model", "no_live_worker", fmt.Sprintf("No live worker serves the model `%s`", name))
	default:
		writeError(w, http.StatusServiceUnavailable, "server_error", "", "bus_error", err.Error())
	}
}

// waitForModel returns nil when a live worker serves name, ErrUnknownModel
// when neither a live worker nor lf_models knows it, and ErrNoWorker when it
// is known but no worker appears within WorkerWait.
func (g *Gateway) waitForModel(ctx context.Context, name string) error {
	asked := time.Now()
	deadline := asked.Add(g.cfg.WorkerWait)
	forced := false
	for {
		live, stored, err := g.snapshot(ctx, time.Time{})
		if err != nil {
			return err
		}
		if live[name] == 0 && !stored[name] && !forced {
			// Maybe new since the cached lists: read them again unless
			// they were read after the request came.
			forced = true
			if live, stored, err = g.snapshot(ctx, asked); err != nil {
				return err
			}
		}
		if live[name] > 0 {
			return nil
		}
		if _, expert := g.expert(name); !stored[name] && !expert {
			return ErrUnknownModel
		}
		if time.Now().After(deadline) {
			return ErrNoWorker
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(g.cfg.RefreshEvery):
		}
	}
}

// snapshot returns the live workers per model and the models in lf_models,
// cached for RefreshEvery; when since is set, only lists read after since
// are taken from the cache.
func (g *Gateway) snapshot(ctx context.Context, since time.Time) (map[string]int, map[string]bool, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.live != nil && time.Since(g.refreshed) < g.cfg.RefreshEvery && g.refreshed.After(since) {
		return g.live, g.stored, nil
	}
	live, err := routing.LiveWorkers(ctx, g.workers)
	if err != nil {
		return nil, nil, err
	}
	stored := map[string]bool{}
	infos, err := g.models.List(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("list %s: %w", pipeline.BucketModels, err)
	}
	for _, in := range infos {
		if name, ok := modelstore.NameOf(in.Name); ok && !in.Deleted {
			stored[name] = true // a name with a current version, not a file
		}
	}
	g.live, g.stored, g.refreshed = live, stored, time.Now()
	return live, stored, nil
}

// ModelInfo is an entry of GET /v1/models.
type ModelInfo struct {
	ID          string `json:"id"`
	Object      string `json:"object"`
	Created     int64  `json:"created"`
	OwnedBy     string `json:"owned_by"`
	LiveWorkers int    `json:"live_workers"`
}

func (g *Gateway) listModels(w http.ResponseWriter, r *http.Request, _ zerolog.Logger) {
	live, _, err := g.snapshot(r.Context(), time.Time{})
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "server_error", "", "bus_error", err.Error())
		return
	}
	names := make([]string, 0, len(live))
	for n := range live {
		names = append(names, n)
	}
	sort.Strings(names)
	data := make([]ModelInfo, len(names))
	for i, n := range names {
		data[i] = ModelInfo{ID: n, Object: "model", Created: g.started.Unix(), OwnedBy: "largeforge", LiveWorkers: live[n]}
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": data})
}

// Health computes the §3.6 health report (see the package comment for the
// rules).
func (g *Gateway) Health(ctx context.Context) schemas.HealthResponse {
	resp := schemas.HealthResponse{Version: g.cfg.Version, UptimeSeconds: int64(time.Since(g.started).Seconds())}
	bus := schemas.Component{Name: "bus", Status: schemas.StatusHealthy}
	if !g.bus.Connected() {
		bus.Status, bus.Message = schemas.StatusUnhealthy, "not connected to NATS"
	}
	resp.Components = append(resp.Components, bus)
	live, stored, err := g.snapshot(ctx, time.Time{})
	if err != nil {
		bus.Status, bus.Message = schemas.StatusUnhealthy, err.Error()
		resp.Components[0] = bus
	}
	names := map[string]bool{}
	for n := range live {
		names[n] = true
	}
	for n := range stored {
		names[n] = true
	}
	if r := g.router.Load(); r != nil {
		for _, e := range r.Experts() {
			names[e.Name] = true
			v := 0.0
			if live[e.Name] > 0 {
				v = 1
			}
			g.met.ExpertAvailability.WithLabelValues(e.Name).Set(v)
		}
	}
	sorted := make([]string, 0, len(names))
	for n := range names {
		sorted = append(sorted, n)
	}
	sort.Strings(sorted)
	up := 0
	for _, n := range sorted {
		c := schemas.Component{Name: "model:" + n, Status: schemas.StatusHealthy, Details: map[string]any{"live_workers": live[n]}}
		if live[n] == 0 {
			c.Status, c.Message = schemas.StatusUnhealthy, "no live worker"
		} else {
			up++
		}
		resp.Components = append(resp.Components, c)
	}
	switch {
	case bus.Status != schemas.StatusHealthy || up == 0:
		resp.Status = schemas.StatusUnhealthy
	case up < len(sorted):
		resp.Status = schemas.StatusDegraded
	default:
		resp.Status = schemas.StatusHealthy
	}
	return resp
}

func (g *Gateway) health(w http.ResponseWriter, r *http.Request, _ zerolog.Logger) {
	h := g.Health(r.Context())
	status := http.StatusOK
	if h.Status == schemas.StatusUnhealthy {
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, h)
}
