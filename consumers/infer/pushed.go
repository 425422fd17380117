package infer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/largeforge/largeforge/model"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/storage/modelstore"
)

// DefaultPushedEvery is how often ServePushed reads lf_models.
const DefaultPushedEvery = 2 * time.Second

// PushedConfig says which models pushed to lf_models a worker serves
// without a restart: every one (All), or those of Names (each once it is
// pushed, a fine-tuning job's fine_tuned_model among them).
type PushedConfig struct {
	All   bool
	Names []string
	// Cache is where versions are fetched (cache/<name>/<digest>); required.
	Cache string
	// Every is how often lf_models is read (default DefaultPushedEvery).
	Every time.Duration
}

// Pushed serves models as they are pushed to lf_models: each new name it
// selects is fetched (verified), loaded and served under its name by a
// Workers of its own (worker id <Config.WorkerID>-<name>), while those
// served already go on. A name keeps the version it loaded; one that fails
// to fetch or load is logged and tried again when a new version is pushed.
type Pushed struct {
	bus   *pipeline.Bus
	ms    *modelstore.Store
	pc    PushedConfig
	cfg   Config
	log   zerolog.Logger
	reg   prometheus.Registerer
	names map[string]bool

	mu     sync.Mutex
	served map[string]*Workers
	models []*model.Model
	failed map[string]string // name → the digest that failed
	done   chan struct{}
	err    error
}

// ServePushed starts serving pushed models until ctx ends; Wait returns
// once every model it serves has stopped.
func ServePushed(ctx context.Context, bus *pipeline.Bus, pc PushedConfig, cfg Config, log zerolog.Logger, reg prometheus.Registerer) (*Pushed, error) {
	switch {
	case bus == nil:
		return nil, fmt.Errorf("%w: serving pushed models needs a bus", ErrInvalidOption)
	case pc.Cache == "":
		return nil, fmt.Errorf("%w: serving pushed models needs a model cache directory", ErrInvalidOption)
	case pc.All == (len(pc.Names) > 0):
		return nil, fmt.Errorf("%w: serve every pushed model or a named set, not both or neither", ErrInvalidOption)
	case pc.Every < 0:
		return nil, fmt.Errorf("%w: pushed-model refresh %v is negative", ErrInvalidOption, pc.Every)
	}
	if pc.Every == 0 {
		pc.Every = DefaultPushedEvery
	}
	if cfg.WorkerID == "" {
		cfg.WorkerID = pipeline.DefaultWorkerID()
	}
	ms, err := modelstore.New(ctx, bus)
	if err != nil {
		return nil, err
	}
	p := &Pushed{bus: bus, ms: ms, pc: pc, cfg: cfg, log: log, reg: reg, names: map[string]bool{},
		served: map[string]*Workers{}, failed: map[string]string{}, done: make(chan struct{})}
	for _, n := range pc.Names {
		p.names[n] = true
	}
	go p.run(ctx)
	return p, nil
}

func (p *Pushed) run(ctx context.Context) {
	defer close(p.done)
	t := time.NewTicker(p.pc.Every)
	defer t.Stop()
	for {
		p.refresh(ctx)
		select {
		case <-ctx.Done():
			p.stop()
			return
		case <-t.C:
		}
	}
}

// refresh starts serving the selected names not served yet.
func (p *Pushed) refresh(ctx context.Context) {
	list, err := p.ms.List(ctx)
	if err != nil {
		if ctx.Err() == nil {
			p.log.Warn().Err(err).Msg("list pushed models")
		}
		return
	}
	for _, m := range list {
		p.mu.Lock()
		_, serving := p.served[m.Name]
		skip := serving || p.failed[m.Name] == m.Digest || (!p.pc.All && !p.names[m.Name])
		p.mu.Unlock()
		if skip || ctx.Err() != nil {
			continue
		}
		if err := p.serve(ctx, m.Name); err != nil {
			if ctx.Err() != nil {
				return
			}
			p.log.Error().Err(err).Str("model", m.Name).Msg("cannot serve pushed model")
			p.mu.Lock()
			p.failed[m.Name] = m.Digest
			p.mu.Unlock()
		}
	}
}

func (p *Pushed) serve(ctx context.Context, name string) error {
	dir, digest, err := p.ms.Fetch(ctx, name, p.pc.Cache)
	if err != nil {
		return err
	}
	m, tok, err := Load(name, dir, p.cfg, p.log)
	if err != nil {
		return err
	}
	cfg := p.cfg
	cfg.WorkerID = p.cfg.WorkerID + "-" + name
	w, err := Start(ctx, p.bus, []ModelInput{{Name: name, Model: m, Tok: tok}}, cfg, p.log, p.reg)
	if err != nil {
		_ = m.Close()
		return err
	}
	p.mu.Lock()
	p.served[name] = w
	p.models = append(p.models, m)
	p.mu.Unlock()
	p.log.Info().Str("model", name).Str("digest", digest).Msg("serving pushed model")
	return nil
}

// stop waits for the served models' workers (their ctx has ended) and
// closes the models.
func (p *Pushed) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	var errs []error
	for name, w := range p.served {
		if err := w.Wait(); err != nil {
			errs = append(errs, fmt.Errorf("pushed model %s: %w", name, err))
		}
	}
	for _, m := range p.models {
		_ = m.Close()
	}
	p.err = errors.Join(errs...)
}

// Served lists the names being served, sorted.
func (p *Pushed) Served() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]string, 0, len(p.served))
	for n := range p.served {
		out = append(out, n)
	}
	sort.Strings(out)
	return slices.Clip(out)
}

// Wait blocks until ctx has ended and every served model stopped.
func (p *Pushed) Wait() error {
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}
