// Package console is the gateway's web console: hand-written pages (HTML,
// JavaScript and CSS embedded in the binary; no CDN, no build step) under
// /console/ and the small JSON endpoints under /console/api/ they poll.
// Everything it shows is read from the bus: job records (lf_jobs),
// heartbeats (lf_workers), dataset manifests (lf_datasets) and their
// rejects (lf_artifacts), training events (LF_EVENTS), routing decisions
// (LF_ROUTES) and the models in lf_models.
//
// Pages:
//
//	/console/jobs            jobs with live progress and request counts
//	/console/jobs/<id>       a job, its errors, and a cancel button
//	/console/datasets[/<n>]  manifests, parts, rejects by rule with samples
//	/console/workers         heartbeats, models, slots
//	/console/experts         experts and the recent routing decisions
//	/console/training[/<id>] training runs; loss, eval loss and learning-rate curves
//	/console/models          the models in the store
//
// The pages themselves hold no data and are served to anyone; every
// /console/api/ endpoint takes the gateway's API key (Authorization: Bearer,
// which the page asks for once and keeps in the tab's sessionStorage) and
// answers 401 without it. Unknown ids answer 404 with a message the page
// shows. The one endpoint that changes state, POST
// /console/api/jobs/<id>/cancel, goes through jobs.Cancel, the job's own
// cancel path.
package console

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/schemas"
	"github.com/largeforge/largeforge/storage"
	"github.com/largeforge/largeforge/storage/modelstore"
)

// Prefix is where the console is mounted.
const Prefix = "/console/"

// Read limits of the endpoints.
const (
	MaxEvents         = 5000 // training events of one job
	MaxDecisions      = 100  // recent routing decisions
	MaxRejectsRead    = 1000 // reject lines read for the samples
	SamplesPerRule    = 3
	defaultReadTimout = 10 * time.Second
)

// ErrInvalidOption is wrapped by New's errors.
var ErrInvalidOption = errors.New("invalid console option")

//go:embed static
var static embed.FS

// pages are the first path elements under /console/ that are pages.
var pages = map[string]bool{"": true, "jobs": true, "datasets": true, "workers": true, "experts": true, "training": true, "models": true}

// Options configure a Console.
type Options struct {
	// Authorized reports whether a request carries a valid API key (the
	// gateway's check); nil lets every request through.
	Authorized func(*http.Request) bool
	// Experts returns the experts the gateway routes over (nil: none).
	Experts func() []schemas.ExpertConfig
	Log     zerolog.Logger
}

// Console serves the pages and their endpoints. The buckets are opened on
// first use, so a gateway whose credential cannot read them still starts
// (the endpoints then answer 503 with the bus's error).
type Console struct {
	bus   *pipeline.Bus
	opt   Options
	files http.Handler

	mu        sync.Mutex
	store     *jobs.Store
	kvs       map[string]*pipeline.KV
	artifacts storage.Store
	models    *modelstore.Store
}

// New returns a console over bus.
func New(bus *pipeline.Bus, opt Options) (*Console, error) {
	if bus == nil {
		return nil, fmt.Errorf("%w: console needs a bus", ErrInvalidOption)
	}
	sub, err := fs.Sub(static, "static")
	if err != nil {
		return nil, err
	}
	return &Console{bus: bus, opt: opt, kvs: map[string]*pipeline.KV{},
		files: http.StripPrefix(Prefix+"static/", http.FileServer(http.FS(sub)))}, nil
}

// Handler serves the paths under Prefix.
func (c *Console) Handler() http.Handler {
	mux := http.NewServeMux()
	allow := map[string][]string{} // an endpoint's path: the methods it answers
	var paths []string
	api := func(pattern string, h func(w http.ResponseWriter, r *http.Request) (any, error)) {
		method, path, _ := strings.Cut(pattern, " ")
		if allow[path] == nil {
			paths = append(paths, path)
		}
		allow[path] = append(allow[path], method)
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			if c.opt.Authorized != nil && !c.opt.Authorized(r) {
				writeError(w, http.StatusUnauthorized, "invalid_api_key", "Invalid API key")
				return
			}
			ctx, cancel := context.WithTimeout(r.Context(), defaultReadTimout)
			defer cancel()
			v, err := h(w, r.WithContext(ctx))
			if err != nil {
				status, code := statusOf(err)
				writeError(w, status, code, err.Error())
				return
			}
			writeJSON(w, http.StatusOK, v)
		})
	}
	api("GET /console/api/jobs", c.listJobs)
	api("GET /console/api/jobs/{id}", c.getJob)
	api("POST /console/api/jobs/{id}/cancel", c.cancelJob)
	api("GET /console/api/jobs/{id}/events", c.jobEvents)
	api("GET /console/api/jobs/{id}/errors", c.jobErrors)
	api("GET /console/api/datasets", c.listDatasets)
	api("GET /console/api/datasets/{name}", c.getDataset)
	api("GET /console/api/workers", c.listWorkers)
	api("GET /console/api/experts", c.listExperts)
	api("GET /console/api/models", c.listModels)
	// Another method on an endpoint's path is a 405 naming the ones it
	// answers (not the catch-all's 404).
	for _, path := range paths {
		methods := allow[path]
		if slices.Contains(methods, http.MethodGet) {
			methods = append(methods, http.MethodHead)
		}
		allowed := strings.Join(methods, ", ")
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", allowed)
			writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", fmt.Sprintf("%s %s: this endpoint answers %s", r.Method, r.URL.Path, allowed))
		})
	}
	mux.HandleFunc("/console/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("Unknown console endpoint %s %s", r.Method, r.URL.Path))
	})
	mux.Handle("GET /console/static/", c.files)
	mux.HandleFunc("/console/", c.page)
	return securityHeaders(mux)
}

// securityHeaders lets the pages load only what the console serves.
func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Referrer-Policy", "no-referrer")
		h.ServeHTTP(w, r)
	})
}

// page serves index.html for every page path (the script renders the page
// from location.pathname); 404 for a path that is no page.
func (c *Console) page(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "Method not allowed", http.StatusMethodNotAllowed)
		return
	}
	first, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, Prefix), "/")
	data, err := static.ReadFile("static/index.html")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	if !pages[first] {
		w.WriteHeader(http.StatusNotFound)
	}
	_, _ = w.Write(data)
}

// notFound is an unknown id: 404 with its message.
type notFound struct{ msg string }

func (e notFound) Error() string { return e.msg }

// badRequest is input the console refuses: 400.
type badRequest struct{ msg string }

func (e badRequest) Error() string { return e.msg }

func statusOf(err error) (int, string) {
	var nf notFound
	var br badRequest
	switch {
	case errors.As(err, &nf), errors.Is(err, jobs.ErrNotFound):
		return http.StatusNotFound, "not_found"
	case errors.As(err, &br):
		return http.StatusBadRequest, "invalid_request"
	case errors.Is(err, jobs.ErrIllegalTransition):
		return http.StatusConflict, "illegal_transition"
	}
	return http.StatusServiceUnavailable, "bus_error"
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError writes the gateway's error shape, {"error":{"message","type","code"}}.
func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]any{"error": map[string]any{"message": msg, "type": "invalid_request_error", "code": code}})
}

// kv opens bucket once.
func (c *Console) kv(ctx context.Context, bucket string) (*pipeline.KV, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if kv := c.kvs[bucket]; kv != nil {
		return kv, nil
	}
	kv, err := c.bus.KV(ctx, bucket)
	if err != nil {
		return nil, err
	}
	c.kvs[bucket] = kv
	return kv, nil
}

func (c *Console) jobStore(ctx context.Context) (*jobs.Store, error) {
	kv, err := c.kv(ctx, pipeline.BucketJobs)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.store == nil {
		if c.store, err = jobs.NewStore(kv); err != nil {
			return nil, err
		}
	}
	return c.store, nil
}

func (c *Console) artifactStore(ctx context.Context) (storage.Store, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.artifacts == nil {
		s, err := storage.OpenObjects(ctx, c.bus, "")
		if err != nil {
			return nil, err
		}
		c.artifacts = s
	}
	return c.artifacts, nil
}

func (c *Console) modelStore(ctx context.Context) (*modelstore.Store, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.models == nil {
		s, err := modelstore.New(ctx, c.bus)
		if err != nil {
			return nil, err
		}
		c.models = s
	}
	return c.models, nil
}
