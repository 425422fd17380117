package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/largeforge/largeforge/consumers/datasetsink"
	"github.com/largeforge/largeforge/consumers/infer"
	"github.com/largeforge/largeforge/consumers/resultsink"
	trainjobs "github.com/largeforge/largeforge/consumers/train"
	"github.com/largeforge/largeforge/dataset"
	"github.com/largeforge/largeforge/logging"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/routing"
	"github.com/largeforge/largeforge/schemas"
	"github.com/largeforge/largeforge/storage"
	"github.com/largeforge/largeforge/storage/modelstore"
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
	// LoRA are adapters served unmerged, each a model id of its own on a
	// --model base (--lora ID=BASE:DIR, DIR a §4.2 directory or a name
	// pushed to lf_models, such as <job>-adapter).
	LoRA    []infer.AdapterSpec
	DataDir string
	// ModelCache is where models fetched from lf_models are kept.
	ModelCache string
	Infer      infer.Config
	Train      trainjobs.Config
	// Experts are served by the infer role too (§2.3): each under its
	// name, from its model_path (a checkpoint directory, or a model in
	// lf_models) with its max_tokens as the context, or, with an endpoint,
	// by a proxy worker that forwards to it. An expert whose name a live
	// worker already serves is skipped.
	Experts []schemas.ExpertConfig
	// ExpertNames are experts to read from the lf_experts bucket and serve
	// as Experts (worker --expert).
	ExpertNames []string
	// ServePushed (worker --serve-pushed) serves models pushed to
	// lf_models as they come, without a restart: ["all"], or those names
	// (a fine-tuning job's fine_tuned_model, say); fetched into ModelCache.
	ServePushed []string
	// LiveSince, when set, is when the server started (up): a heartbeat
	// older than that, left by an earlier run within its TTL, is not a live
	// worker serving an expert.
	LiveSince time.Time
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
	if len(c.Models) == 0 && len(c.Experts) == 0 && len(c.ExpertNames) == 0 && len(c.ServePushed) == 0 {
		return fmt.Errorf("--role infer needs at least one --model name=DIR, --expert NAME or --serve-pushed")
	}
	if err := validateServePushed(c); err != nil {
		return err
	}
	for _, n := range c.ExpertNames {
		if err := pipeline.ValidToken(n); err != nil {
			return fmt.Errorf("--expert %s: %w", n, err)
		}
	}
	for n, d := range c.Models {
		if err := pipeline.ValidToken(n); err != nil {
			return fmt.Errorf("--model %s=%s: %w", n, d, err)
		}
		if st, err := os.Stat(d); d != "" && err == nil && st.IsDir() {
			continue
		}
		if d != "" && modelstore.ValidName(d) != nil {
			return fmt.Errorf("--model %s=%s: not a directory nor a model name in lf_models", n, d)
		}
		if c.ModelCache == "" {
			return fmt.Errorf("--model %s from lf_models needs --model-cache", n)
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
	for _, l := range c.LoRA {
		if _, ok := c.Models[l.Base]; !ok {
			return fmt.Errorf("--lora %s=%s:%s: no --model %s to serve it on", l.Name, l.Base, l.Dir, l.Base)
		}
		if st, err := os.Stat(l.Dir); err == nil && st.IsDir() {
			continue
		}
		if modelstore.ValidName(l.Dir) != nil || c.ModelCache == "" {
			return fmt.Errorf("--lora %s=%s:%s: not a directory nor (with --model-cache) a name in lf_models", l.Name, l.Base, l.Dir)
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

// startDataset starts a dataset sink storing parts and rejects in
// lf_artifacts, mirrored to <data-dir>/datasets.
func startDataset(ctx context.Context, bus *pipeline.Bus, wc WorkerConfig, log zerolog.Logger, reg prometheus.Registerer) (*startedRole, error) {
	dir, local, err := dataStore(wc.DataDir)
	if err != nil {
		return nil, err
	}
	objects, err := storage.OpenObjects(ctx, bus, "")
	if err != nil {
		return nil, err
	}
	store, err := storage.NewMirror(objects, local)
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

// startResults starts a results sink storing parts and final files in
// lf_artifacts, the final files mirrored to <data-dir>/jobs.
func startResults(ctx context.Context, bus *pipeline.Bus, wc WorkerConfig, log zerolog.Logger, _ prometheus.Registerer) (*startedRole, error) {
	dir, local, err := dataStore(wc.DataDir)
	if err != nil {
		return nil, err
	}
	objects, err := storage.OpenObjects(ctx, bus, "")
	if err != nil {
		return nil, err
	}
	w, err := resultsink.StartStore(ctx, bus, objects, resultsink.Options{Mirror: local}, log)
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
		if st, err := os.Stat(dir); dir == "" || err != nil || !st.IsDir() {
			stored := dir // --model NAME=STORED serves the stored model STORED as NAME
			if stored == "" {
				stored = name
			}
			if dir, err = fetchModel(ctx, bus, stored, wc.ModelCache, log); err != nil {
				return nil, fmt.Errorf("--model %s: %w", name, err)
			}
		}
		models[name] = dir
	}
	experts, err := expertsToServe(ctx, bus, wc)
	if err != nil {
		return nil, err
	}
	icfg := wc.Infer
	var proxies []schemas.ExpertConfig
	for _, e := range experts {
		if e.Endpoint != "" {
			proxies = append(proxies, e)
			continue
		}
		dir, err := expertModelDir(ctx, bus, e, wc.ModelCache)
		if err != nil {
			return nil, err
		}
		models[e.Name] = dir
		if icfg.ContextLen == nil {
			icfg.ContextLen = map[string]int{}
		}
		icfg.ContextLen[e.Name] = e.MaxTokens
	}
	var all []*infer.Workers
	stopAll := func() {
		for _, w := range all {
			w.Stop()
			_ = w.Wait()
		}
	}
	if len(models) > 0 {
		lora := slices.Clone(wc.LoRA)
		for i, l := range lora { // a pushed adapter is fetched like a model
			if st, err := os.Stat(l.Dir); err != nil || !st.IsDir() {
				if lora[i].Dir, err = fetchModel(ctx, bus, l.Dir, wc.ModelCache, log); err != nil {
					return nil, fmt.Errorf("--lora %s: %w", l.Name, err)
				}
			}
		}
		w, err := infer.StartDirsServingAdapters(ctx, bus, models, wc.Adapters, lora, icfg, log, reg)
		if err != nil {
			return nil, err
		}
		all = append(all, w)
	}
	for _, e := range proxies {
		pc := icfg
		if len(all) > 0 {
			// One heartbeat key per worker: the proxies of a process get their own ids.
			pc.WorkerID = cmp.Or(pc.WorkerID, pipeline.DefaultWorkerID()) + "-" + e.Name
		}
		w, err := infer.StartProxy(ctx, bus, e, 0, pc, log, reg)
		if err != nil {
			stopAll()
			return nil, err
		}
		all = append(all, w)
	}
	pushed, err := startServePushed(ctx, bus, wc, icfg, log, reg)
	if err != nil {
		stopAll()
		return nil, err
	}
	if len(all) == 0 && pushed == nil {
		return nil, fmt.Errorf("--role infer: every expert is served already and no --model is given")
	}
	var served []string
	for _, w := range all {
		served = append(served, w.Models()...)
	}
	wait := func() error {
		var errs []error
		for _, w := range all {
			errs = append(errs, w.Wait())
		}
		if pushed != nil {
			errs = append(errs, pushed.Wait())
		}
		return errors.Join(errs...)
	}
	if len(all) == 0 {
		return &startedRole{Wait: wait, describe: func(e *zerolog.Event) *zerolog.Event {
			return e.Strs("serve_pushed", wc.ServePushed)
		}, value: pushed}, nil
	}
	return &startedRole{Wait: wait, describe: func(e *zerolog.Event) *zerolog.Event {
		return e.Strs("models", served).Str("worker_id", all[0].ID)
	}, value: all[0]}, nil
}

// expertsToServe returns those of wc.ExpertNames read from lf_experts, and
// the experts of wc less those a live worker serves already or a --model
// names.
func expertsToServe(ctx context.Context, bus *pipeline.Bus, wc WorkerConfig) ([]schemas.ExpertConfig, error) {
	var named []schemas.ExpertConfig
	if len(wc.ExpertNames) > 0 {
		kv, err := bus.KV(ctx, pipeline.BucketExperts)
		if err != nil {
			return nil, err
		}
		for _, n := range wc.ExpertNames {
			entry, err := kv.Get(ctx, n)
			if err != nil {
				return nil, fmt.Errorf("--expert %s: read lf_experts: %w", n, err)
			}
			e, err := routing.ParseExpertEntry(n, entry.Value)
			if err != nil {
				return nil, fmt.Errorf("--expert %s: %w", n, err)
			}
			named = append(named, e)
		}
	}
	if len(wc.Experts) == 0 {
		return named, nil // named one by one: served as asked
	}
	wkv, err := bus.KV(ctx, pipeline.BucketWorkers)
	if err != nil {
		return nil, err
	}
	var live map[string]int
	if wc.LiveSince.IsZero() {
		live, err = routing.LiveWorkers(ctx, wkv)
	} else {
		// A heartbeat written after LiveSince (one of the same second
		// may be older: not counted).
		since := wc.LiveSince.Unix()
		live, err = routing.CountWorkers(ctx, wkv, func(hb schemas.Heartbeat) bool {
			return hb.Role == schemas.WorkerInfer && hb.UpdatedAt > since
		})
	}
	if err != nil {
		return nil, err
	}
	out := named
	for _, e := range wc.Experts {
		if _, ok := wc.Models[e.Name]; ok || live[e.Name] > 0 {
			continue
		}
		out = append(out, e)
	}
	return out, nil
}

// expertModelDir is the checkpoint directory of an expert's model_path: the
// directory itself, or the model of that name fetched from lf_models into
// cache. Anything else is "Invalid model path".
func expertModelDir(ctx context.Context, bus *pipeline.Bus, e schemas.ExpertConfig, cache string) (string, error) {
	if st, err := os.Stat(e.ModelPath); err == nil && st.IsDir() {
		return e.ModelPath, nil
	}
	if pipeline.ValidToken(e.ModelPath) != nil || cache == "" {
		return "", fmt.Errorf("expert %s: %w: %s is not a directory nor a model name in lf_models", e.Name, schemas.ErrInvalidModelPath, e.ModelPath)
	}
	dir, err := fetchModel(ctx, bus, e.ModelPath, cache, zerolog.Nop())
	if err != nil {
		return "", fmt.Errorf("expert %s: %w: %s is not a directory nor a model in lf_models: %w", e.Name, schemas.ErrInvalidModelPath, e.ModelPath, err)
	}
	return dir, nil
}

// fetchModel is the directory of the current version of the model name
// of lf_models, fetched (and verified) into cache/<name>/<digest>: a new
// push never changes the files of a version a worker has loaded.
func fetchModel(ctx context.Context, bus *pipeline.Bus, name, cache string, log zerolog.Logger) (string, error) {
	ms, err := modelstore.New(ctx, bus)
	if err != nil {
		return "", err
	}
	dir, digest, err := ms.Fetch(ctx, name, cache)
	if err != nil {
		return "", err
	}
	log.Info().Dict("context", logging.Ctx().Str("model", name).Str("digest", digest).Str("dir", dir)).Msg("model fetched from lf_models")
	return dir, nil
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
	if len(wc.Models) > 0 || len(wc.Experts) > 0 {
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

// NATS roles: the users of deploy/nats-roles.conf (ARCHITECTURE.md "Roles").
// Each replies on its own inbox prefix, _INBOX_<role> by default.
const (
	NATSAdmin    = "admin"
	NATSIngest   = "ingest"
	NATSSubmit   = "submit"
	NATSAPI      = "api"
	NATSInfer    = "infer"
	NATSTrain    = "train"
	NATSResults  = "results"
	NATSDatasets = "datasets"
)

// natsRoleUses is what each role uses of the topology: it checks at start
// that these exist (only admin applies the topology). The api role's are
// those of routing and interactive requests, the Files and Batches APIs
// (LF_REQUESTS, LF_RESULTS' control markers, lf_jobs, lf_artifacts), the
// Fine-tuning API (LF_TRAIN, LF_EVENTS, lf_models), the Files API's
// listing (lf_files) and the console (lf_datasets; lf_claims, which number
// a dataset's rejects). The train role reads a dataset's part index in
// lf_dedupe, which numbers the dataset's parts.
var natsRoleUses = map[string][]string{
	NATSIngest:   {pipeline.StreamDatasets, pipeline.StreamDLQ, pipeline.BucketDatasets},
	NATSSubmit:   {pipeline.StreamRequests, pipeline.StreamTrain, pipeline.StreamResults, pipeline.StreamRoutes, pipeline.BucketJobs, pipeline.BucketWorkers, pipeline.BucketExperts, pipeline.BucketArtifacts, pipeline.BucketModels},
	NATSAPI:      {pipeline.StreamRoutes, pipeline.StreamRequests, pipeline.StreamResults, pipeline.StreamTrain, pipeline.StreamEvents, pipeline.BucketWorkers, pipeline.BucketExperts, pipeline.BucketModels, pipeline.BucketArtifacts, pipeline.BucketJobs, pipeline.BucketDatasets, pipeline.BucketClaims, pipeline.BucketFiles},
	NATSInfer:    {pipeline.StreamRequests, pipeline.StreamResults, pipeline.StreamDLQ, pipeline.BucketJobs, pipeline.BucketWorkers, pipeline.BucketExperts, pipeline.BucketModels},
	NATSTrain:    {pipeline.StreamTrain, pipeline.StreamDLQ, pipeline.BucketJobs, pipeline.BucketWorkers, pipeline.BucketArtifacts, pipeline.BucketClaims, pipeline.BucketDedupe, pipeline.StreamEvents},
	NATSResults:  {pipeline.StreamResults, pipeline.StreamDLQ, pipeline.BucketJobs, pipeline.BucketArtifacts, pipeline.BucketClaims},
	NATSDatasets: {pipeline.StreamDatasets, pipeline.StreamDLQ, pipeline.BucketDatasets, pipeline.BucketArtifacts, pipeline.BucketClaims, pipeline.BucketDedupe},
}

// workerNATSRole is the NATS role of each worker role.
var workerNATSRole = map[string]string{RoleInfer: NATSInfer, RoleTrain: NATSTrain, RoleResults: NATSResults, RoleDataset: NATSDatasets}

// commandRole is the NATS role a command runs as. What the command runs
// fixes it: worker --role (infer, train, results, datasets), gateway (api),
// ingest, submit and train --submit (submit). Any other command runs as the
// role its --nats-user names when that is one of the table's, else as admin
// (up, topology apply, model push, jobs, ...).
func commandRole(cmd *cobra.Command, natsUser string) string {
	flag := func(name string) string {
		if f := cmd.Flags().Lookup(name); f != nil {
			return f.Value.String()
		}
		return ""
	}
	switch cmd.CommandPath() {
	case "largeforge worker":
		if r, ok := workerNATSRole[flag("role")]; ok {
			return r
		}
	case "largeforge gateway":
		return NATSAPI
	case "largeforge ingest":
		return NATSIngest
	case "largeforge submit":
		return NATSSubmit
	case "largeforge topology apply":
		return NATSAdmin
	case "largeforge train":
		if flag("submit") == "true" {
			return NATSSubmit
		}
	}
	if _, ok := natsRoleUses[natsUser]; ok {
		return natsUser
	}
	return NATSAdmin
}

// setRole fills cfg.Role from the command and, unless --inbox-prefix (or
// LARGEFORGE_INBOX_PREFIX) gives one, the inbox prefix _INBOX_<role>.
func setRole(cmd *cobra.Command, cfg *Config) {
	cfg.Role = commandRole(cmd, cfg.NATS.User)
	if cfg.NATS.InboxPrefix == "" {
		cfg.NATS.InboxPrefix = "_INBOX_" + cfg.Role
	}
}

// connectAs connects as the command's role (configFrom(ctx).Role) under
// the connection name name. Admin applies the topology; any other role
// only checks that what it uses exists, and fails naming what is missing:
// it never tries to change streams or buckets.
func connectAs(ctx context.Context, name string, log zerolog.Logger) (*pipeline.Bus, error) {
	cfg := configFrom(ctx)
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second+max(cfg.NATS.WaitForServer, clusterSettle))
	defer cancel()
	c := cfg.NATS
	c.Name = name
	bus, err := pipeline.Connect(cctx, c, log)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s (start one with `largeforge up`, or set --nats / LARGEFORGE_NATS): %w", c.URL, err)
	}
	if err := prepareTopology(cctx, bus, cfg.Role, cfg.NATS.WaitForServer, log); err != nil {
		bus.Close()
		return nil, err
	}
	return bus, nil
}

// clusterSettle is how long a command's start-up check of the topology
// keeps asking while JetStream does not answer (at least --wait-for-nats):
// the streams of a cluster whose node was killed or restarted moments ago
// elect new leaders within seconds.
const clusterSettle = 30 * time.Second

// topologyAttempt bounds one check of the topology, so that a request lost
// with a node is asked again instead of using up the whole wait.
const topologyAttempt = 5 * time.Second

// prepareTopology applies the topology as admin and checks the role's part
// of it as any other role. A part still missing is waited for up to wait
// (--wait-for-nats): an `up` that has just started applies it moments after
// its server answers. A check that gets no answer, or a cluster's answer
// while it elects leaders, is asked again for up to clusterSettle (or wait,
// when longer).
func prepareTopology(ctx context.Context, bus *pipeline.Bus, role string, wait time.Duration, log zerolog.Logger) error {
	var err error
	if role == NATSAdmin || role == "" {
		if err = watchDenied(ctx, bus, bus.EnsureTopology); err != nil {
			return fmt.Errorf("apply the topology as admin: %w (run as the admin user, or pass --nats-user with this user's role)", err)
		}
		return nil
	}
	check := func(ctx context.Context) error {
		actx, cancel := context.WithTimeout(ctx, topologyAttempt)
		defer cancel()
		return bus.CheckTopology(actx, pipeline.DefaultTopology(1).Only(natsRoleUses[role]...))
	}
	now := time.Now()
	deadline, settle := now.Add(wait), now.Add(max(wait, clusterSettle))
	for {
		err = watchDenied(ctx, bus, check)
		missing := errors.Is(err, pipeline.ErrTopologyMissing) && time.Now().Before(deadline)
		unanswered := pipeline.Unanswered(err) && ctx.Err() == nil && time.Now().Before(settle)
		if !missing && !unanswered {
			break
		}
		log.Debug().Err(err).Msg("topology not applied yet or not answered; asking again (--wait-for-nats)")
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	if errors.Is(err, pipeline.ErrTopologyMissing) {
		return fmt.Errorf("%w: the %s role may not create it; an admin must apply the topology first (`largeforge topology apply` as admin, or `largeforge up`)", err, role)
	}
	if err != nil {
		return fmt.Errorf("check the topology as the %s role: %w (does this NATS user hold the %s role of deploy/nats-roles.conf?)", role, err, role)
	}
	return nil
}

// watchDenied runs f and returns its error, or, as soon as the connection
// reports a permissions violation, that violation: a denied JetStream
// request gets no answer, only that asynchronous error, and waiting for the
// deadline would hide it.
func watchDenied(ctx context.Context, bus *pipeline.Bus, f func(context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- f(ctx) }()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			return err
		case <-tick.C:
			if lerr := bus.Conn().LastError(); errors.Is(lerr, nats.ErrPermissionViolation) {
				cancel()
				<-done
				return lerr
			}
		}
	}
}
