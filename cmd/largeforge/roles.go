package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/largeforge/largeforge/consumers/datasetsink"
	"github.com/largeforge/largeforge/consumers/infer"
	"github.com/largeforge/largeforge/consumers/resultsink"
	trainjobs "github.com/largeforge/largeforge/consumers/train"
	"github.com/largeforge/largeforge/dataset"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/storage"
)

// Worker roles.
const (
	RoleInfer   = "infer"
	RoleResults = "results"
	RoleDataset = "dataset"
	RoleTrain   = "train"
)

// WorkerConfig is what the roles start with: the flags of `worker` (one
// role), or what `up` derives from its own (every role).
type WorkerConfig struct {
	Role   string
	Models map[string]string // name → checkpoint directory ("": fetch it from lf_models)
	// Adapters are LoRA adapter directories merged into the models of
	// those names at load (name → adapter directory).
	Adapters map[string]string
	DataDir  string
	// ModelCache is where models fetched from lf_models are kept.
	ModelCache string
	Infer      infer.Config
	Train      trainjobs.Config
}

// Validate checks the flags of worker for its Role.
func (c WorkerConfig) Validate() error {
	r, err := findRole(c.Role)
	if err != nil {
		return err
	}
	return r.validate(c)
}

// role is one row of the role table: what `worker --role <name>` runs, and
// `up` runs every role.
type role struct {
	name     string
	validate func(WorkerConfig) error
	// start starts the role on bus; it runs until ctx ends.
	start   func(ctx context.Context, bus *pipeline.Bus, wc WorkerConfig, log zerolog.Logger, reg prometheus.Registerer) (*startedRole, error)
	running string // the log line once started
}

// startedRole is a running role: Wait returns when it has drained.
type startedRole struct {
	Wait func() error
	// describe adds the role's fields to its log line's context.
	describe func(*zerolog.Event) *zerolog.Event
	// value is the role's workers (*datasetsink.Workers, ...), for tests.
	value any
}

// roles is the role table, in the order `up` starts them.
func roles() []role {
	return []role{
		{name: RoleDataset, validate: needDataDir(RoleDataset), start: startDataset, running: "dataset sink running; Ctrl-C to stop"},
		{name: RoleResults, validate: needDataDir(RoleResults), start: startResults, running: "results sink running; Ctrl-C to stop"},
		{name: RoleTrain, validate: func(c WorkerConfig) error { return c.Train.Validate() }, start: startTrain, running: "train worker running; Ctrl-C to stop"},
		{name: RoleInfer, validate: validateInfer, start: startInfer, running: "infer worker running; Ctrl-C to stop"},
	}
}

func findRole(name string) (role, error) {
	for _, r := range roles() {
		if r.name == name {
			return r, nil
		}
	}
	return role{}, fmt.Errorf("--role %q: want %s, %s, %s or %s", name, RoleInfer, RoleTrain, RoleResults, RoleDataset)
}

func needDataDir(name string) func(WorkerConfig) error {
	return func(c WorkerConfig) error {
		if c.DataDir == "" {
			return fmt.Errorf("--role %s needs --data-dir", name)
		}
		return nil
	}
}

func validateInfer(c WorkerConfig) error {
	if len(c.Models) == 0 {
		return fmt.Errorf("--role infer needs at least one --model name=DIR")
	}
	for n, d := range c.Models {
		if err := pipeline.ValidToken(n); err != nil {
			return fmt.Errorf("--model %s=%s: %w", n, d, err)
		}
		if d == "" {
			if c.ModelCache == "" {
				return fmt.Errorf("--model %s from lf_models needs --model-cache", n)
			}
			continue
		}
		if st, err := os.Stat(d); err != nil || !st.IsDir() {
			return fmt.Errorf("--model %s=%s: not a directory", n, d)
		}
	}
	for n, d := range c.Adapters {
		if _, ok := c.Models[n]; !ok {
			return fmt.Errorf("--adapter %s=%s: no --model %s to apply it to", n, d, n)
		}
		if st, err := os.Stat(d); err != nil || !st.IsDir() {
			return fmt.Errorf("--adapter %s=%s: not a directory", n, d)
		}
	}
	return c.Infer.Validate()
}

// dataStore is the local store of a --data-dir (made absolute).
func dataStore(dataDir string) (string, *storage.Local, error) {
	dir, err := filepath.Abs(dataDir)
	if err != nil {
		return "", nil, err
	}
	store, err := storage.NewLocal(storage.DirsUnder(dir))
	return dir, store, err
}

func startDataset(ctx context.Context, bus *pipeline.Bus, wc WorkerConfig, log zerolog.Logger, reg prometheus.Registerer) (*startedRole, error) {
	dir, store, err := dataStore(wc.DataDir)
	if err != nil {
		return nil, err
	}
	metrics, err := dataset.NewMetrics(reg)
	if err != nil {
		return nil, err
	}
	w, err := datasetsink.StartStore(ctx, bus, store, log, metrics)
	if err != nil {
		return nil, err
	}
	return &startedRole{Wait: w.Wait, describe: func(e *zerolog.Event) *zerolog.Event { return e.Str("data_dir", dir) }, value: w}, nil
}

func startResults(ctx context.Context, bus *pipeline.Bus, wc WorkerConfig, log zerolog.Logger, _ prometheus.Registerer) (*startedRole, error) {
	dir, store, err := dataStore(wc.DataDir)
	if err != nil {
		return nil, err
	}
	w, err := resultsink.StartStore(ctx, bus, store, resultsink.Options{}, log)
	if err != nil {
		return nil, err
	}
	return &startedRole{Wait: w.Wait, describe: func(e *zerolog.Event) *zerolog.Event { return e.Str("data_dir", dir) }, value: w}, nil
}

// startTrain starts a train worker reading the datasets of jobs without a
// data_dir under <data-dir>/datasets.
func startTrain(ctx context.Context, bus *pipeline.Bus, wc WorkerConfig, log zerolog.Logger, reg prometheus.Registerer) (*startedRole, error) {
	c := wc.Train
	var err error
	if c.DataDir, err = filepath.Abs(wc.DataDir); err != nil {
		return nil, err
	}
	w, err := trainjobs.Start(ctx, bus, c, log, reg)
	if err != nil {
		return nil, err
	}
	return &startedRole{Wait: w.Wait, describe: func(e *zerolog.Event) *zerolog.Event { return e.Str("worker_id", w.ID) }, value: w}, nil
}

// startInfer fetches the models named without a directory from lf_models
// into the model cache, then starts an infer worker serving every model
// with its adapter merged in.
func startInfer(ctx context.Context, bus *pipeline.Bus, wc WorkerConfig, log zerolog.Logger, reg prometheus.Registerer) (*startedRole, error) {
	models := make(map[string]string, len(wc.Models))
	for name, dir := range wc.Models {
		if dir == "" {
			var err error
			if dir, err = infer.FetchModel(ctx, bus, name, wc.ModelCache); err != nil {
				return nil, err
			}
		}
		models[name] = dir
	}
	w, err := infer.StartDirsWithAdapters(ctx, bus, models, wc.Adapters, wc.Infer, log, reg)
	if err != nil {
		return nil, err
	}
	return &startedRole{Wait: w.Wait, describe: func(e *zerolog.Event) *zerolog.Event {
		return e.Strs("models", w.Models()).Str("worker_id", w.ID)
	}, value: w}, nil
}

// Roles are the roles a process runs.
type Roles struct {
	started map[string]*startedRole
	order   []string
}

// startWorkers starts the named roles of the table, in the table's order.
func startWorkers(ctx context.Context, bus *pipeline.Bus, wc WorkerConfig, names []string, log zerolog.Logger, reg prometheus.Registerer) (*Roles, error) {
	want := map[string]bool{}
	for _, n := range names {
		if _, err := findRole(n); err != nil {
			return nil, err
		}
		want[n] = true
	}
	rs := &Roles{started: map[string]*startedRole{}}
	for _, r := range roles() {
		if !want[r.name] {
			continue
		}
		s, err := r.start(ctx, bus, wc, log, reg)
		if err != nil {
			return nil, err
		}
		rs.started[r.name] = s
		rs.order = append(rs.order, r.name)
	}
	return rs, nil
}

// upRoles are the roles `up` runs: all of them, infer only with models.
func upRoles(wc WorkerConfig) []string {
	names := []string{RoleDataset, RoleResults, RoleTrain}
	if len(wc.Models) > 0 {
		names = append(names, RoleInfer)
	}
	return names
}

// Role returns what a started role runs (*resultsink.Workers, ...), nil
// when it was not started.
func (rs *Roles) Role(name string) any {
	if s := rs.started[name]; s != nil {
		return s.value
	}
	return nil
}

// Wait blocks until every role has drained and returns their errors.
func (rs *Roles) Wait() error {
	var errs []error
	for _, n := range rs.order {
		errs = append(errs, rs.started[n].Wait())
	}
	return errors.Join(errs...)
}
