package infer

import (
	"container/list"
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/largeforge/largeforge/model"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/serve"
)

// AdapterSpec is a LoRA adapter served unmerged as a model id of its own
// on a base model the worker serves: its requests (lf.req.*.<Name>, the
// RPC, the gateway, an expert of that name) run in the base's batches,
// mixed with the base's and the other adapters' rows.
type AdapterSpec struct {
	Name string // the model id it is served as
	Base string // the served model it adapts
	Dir  string // its §4.2 directory (adapter_config.json, adapter_model.safetensors)
}

// AdapterCache holds the adapters served unmerged, at most a number of
// bytes of them (Config.AdapterBytes; 0: all): over it the least recently
// used is unloaded, and loaded again from its directory when a request
// asks for it. A request holds the adapter it runs with until it ends.
type AdapterCache struct {
	limit int64

	mu        sync.Mutex
	specs     map[string]adapterSource
	lru       *list.List // of *cachedAdapter, the most recently used first
	held      map[string]*list.Element
	bytes     int64
	loads     int
	evictions int
}

type adapterSource struct {
	base *model.Model
	dir  string
}

type cachedAdapter struct {
	name string
	a    *model.Adapter
}

func newAdapterCache(limit int64) *AdapterCache {
	return &AdapterCache{limit: limit, specs: map[string]adapterSource{}, lru: list.New(), held: map[string]*list.Element{}}
}

// AdapterStats is what an AdapterCache holds and has done.
type AdapterStats struct {
	Held      []string // the adapters in memory, the most recently used first
	Bytes     int64
	Loads     int
	Evictions int
}

// Stats reports the adapters held, their bytes and the loads and
// evictions so far.
func (c *AdapterCache) Stats() AdapterStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := AdapterStats{Bytes: c.bytes, Loads: c.loads, Evictions: c.evictions}
	for e := c.lru.Front(); e != nil; e = e.Next() {
		st.Held = append(st.Held, e.Value.(*cachedAdapter).name)
	}
	return st
}

// Get returns the adapter served as name, loading it when it is not held.
func (c *AdapterCache) Get(_ context.Context, name string) (*model.Adapter, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.held[name]; ok {
		c.lru.MoveToFront(e)
		return e.Value.(*cachedAdapter).a, nil
	}
	src, ok := c.specs[name]
	if !ok {
		return nil, fmt.Errorf("%w: no adapter %s", ErrInvalidOption, name)
	}
	a, err := src.base.LoadAdapter(src.dir)
	if err != nil {
		return nil, fmt.Errorf("adapter %s: %w", name, err)
	}
	c.loads++
	c.held[name] = c.lru.PushFront(&cachedAdapter{name: name, a: a})
	c.bytes += a.Bytes()
	for c.limit > 0 && c.bytes > c.limit && c.lru.Len() > 1 { // the one just loaded stays
		e := c.lru.Back()
		old := e.Value.(*cachedAdapter)
		c.lru.Remove(e)
		delete(c.held, old.name)
		c.bytes -= old.a.Bytes()
		c.evictions++
	}
	return a, nil
}

// adaptedScorer scores with the adapter resolve returns.
type adaptedScorer func(context.Context) (*model.Adapter, error)

func (f adaptedScorer) Score(ctx context.Context, reqs []model.ScoreRequest) ([]model.ScoreResult, error) {
	a, err := f(ctx)
	if err != nil {
		return nil, err
	}
	return a.Score(ctx, reqs)
}

var _ serve.Scorer = adaptedScorer(nil)

// StartDirsServingAdapters is StartDirsWithAdapters (merged: adapters
// merged into the models of those names at load) that also serves each
// of adapters unmerged under its own name on its base (one of models): the base is
// loaded once whatever the number of adapters. Every adapter is loaded and
// checked against its base before anything is served (a mismatch or a rank
// over the limit is an error naming the file and the tensor); then
// cfg.AdapterBytes bounds those held (AdapterCache).
func StartDirsServingAdapters(ctx context.Context, bus *pipeline.Bus, models, merged map[string]string, adapters []AdapterSpec, cfg Config, log zerolog.Logger, reg prometheus.Registerer) (*Workers, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, s := range adapters {
		if err := pipeline.ValidToken(s.Name); err != nil {
			return nil, fmt.Errorf("%w: adapter name: %w", ErrInvalidOption, err)
		}
		if _, ok := models[s.Name]; ok || seen[s.Name] {
			return nil, fmt.Errorf("%w: adapter %s: the name is served twice", ErrInvalidOption, s.Name)
		}
		seen[s.Name] = true
		if _, ok := models[s.Base]; !ok {
			return nil, fmt.Errorf("%w: adapter %s on %s, which is not a model served", ErrInvalidOption, s.Name, s.Base)
		}
	}
	ins, owned, err := loadModels(models, merged, cfg, log)
	if err != nil {
		return nil, err
	}
	cache := newAdapterCache(cfg.AdapterBytes)
	for _, s := range adapters {
		i := slices.IndexFunc(ins, func(in ModelInput) bool { return in.Name == s.Base })
		cache.specs[s.Name] = adapterSource{base: ins[i].Model, dir: s.Dir}
		if _, err := cache.Get(ctx, s.Name); err != nil { // checked before anything is served
			closeModels(owned)
			return nil, err
		}
		ins = append(ins, ModelInput{Name: s.Name, Model: ins[i].Model, Tok: ins[i].Tok, Base: s.Base,
			Adapter: func(ctx context.Context) (*model.Adapter, error) { return cache.Get(ctx, s.Name) }})
	}
	w, err := start(ctx, bus, ins, owned, cfg, log, reg)
	if err != nil {
		closeModels(owned)
		return nil, err
	}
	w.Adapters = cache
	return w, nil
}
