package infer

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/logging"
	"github.com/largeforge/largeforge/model"
	"github.com/largeforge/largeforge/model/checkpoint"
	"github.com/largeforge/largeforge/model/tokenizer"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/schemas"
)

// Worker defaults.
//
// DefaultFetchers is 3: a consume loop holds its batch until the batch's
// last generation ends and its results are acked, then fetches again, so
// the loops beside it keep the Batcher fed meanwhile. Two did on loopback;
// at a 2 ms round trip to the server they fed every slot only 77–86% of
// the time, three 94–98% (BenchmarkJobThroughput's rtt_ figures), with
// the same throughput on loopback. A worker holds up to Fetchers×Slots
// requests.
const (
	DefaultSlots          = 16
	DefaultFetchers       = 3
	DefaultAckWait        = 15 * time.Second
	DefaultMaxDeliver     = 3
	DefaultHeartbeatEvery = 10 * time.Second
)

// Config configures the infer workers of a process.
type Config struct {
	Slots      int           // batcher slots per model, also its fetch batch (default 16)
	Fetchers   int           // consume loops per model, so one batch fills while another finishes (default 3)
	AckWait    time.Duration // default 15s (the redelivery delay after a worker dies); InProgress is sent every AckWait/3 while a batch runs
	MaxDeliver int           // default 3
	NakDelay   time.Duration // default: the pipeline's
	MaxWait    time.Duration // default: the pipeline's
	// HeartbeatEvery is the period of the lf_workers heartbeat (default 10s,
	// below the bucket's 30s TTL).
	HeartbeatEvery time.Duration
	WorkerID       string // default: <host>-<pid>
	Backend        string // GoMLX backend ("" : GOMLX_BACKEND or the pure Go one)
	// ContextLen caps the context (prompt plus completion, in tokens) of
	// the models of those names: an expert's §2.3 max_tokens. A request
	// over it is refused with "Invalid max_tokens" and the limit.
	ContextLen map[string]int
	// AdapterBytes bounds the memory of the LoRA adapters held unmerged
	// (AdapterSpec): over it the least recently used are unloaded, and
	// loaded again when asked for (0: no bound).
	AdapterBytes int64
}

// Validate checks the config; errors wrap ErrInvalidOption.
func (c Config) Validate() error {
	for name, v := range map[string]int{"slots": c.Slots, "fetchers": c.Fetchers, "max deliver": c.MaxDeliver} {
		if v < 0 {
			return fmt.Errorf("%w: %s %d is negative", ErrInvalidOption, name, v)
		}
	}
	if c.AdapterBytes < 0 {
		return fmt.Errorf("%w: adapter bytes %d is negative", ErrInvalidOption, c.AdapterBytes)
	}
	for name, n := range c.ContextLen {
		if n < 2 {
			return fmt.Errorf("%w: context length %d of %s, want at least 2", ErrInvalidOption, n, name)
		}
	}
	err := pipeline.CheckWorkerDurations(c.HeartbeatEvery, map[string]time.Duration{"ack wait": c.AckWait, "nak delay": c.NakDelay, "max wait": c.MaxWait})
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidOption, err)
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.Slots == 0 {
		c.Slots = DefaultSlots
	}
	if c.Fetchers == 0 {
		c.Fetchers = DefaultFetchers
	}
	if c.AckWait == 0 {
		c.AckWait = DefaultAckWait
	}
	if c.MaxDeliver == 0 {
		c.MaxDeliver = DefaultMaxDeliver
	}
	if c.HeartbeatEvery == 0 {
		c.HeartbeatEvery = DefaultHeartbeatEvery
	}
	if c.WorkerID == "" {
		c.WorkerID = pipeline.DefaultWorkerID()
	}
	return c
}

// Durable is the consumer name shared by every worker of a model.
func Durable(modelName string) string { return "infer-" + modelName }

// Load loads a checkpoint directory and its tokenizer.
func Load(name, dir string, cfg Config, log zerolog.Logger) (*model.Model, *tokenizer.Tokenizer, error) {
	opts := []model.Option{model.WithLogger(log)}
	if cfg.Backend != "" {
		opts = append(opts, model.WithBackend(cfg.Backend))
	}
	if n := cfg.ContextLen[name]; n > 0 {
		if mc, err := checkpoint.LoadConfig(dir); err == nil && mc.MaxPositionEmbeddings > 0 {
			n = min(n, mc.MaxPositionEmbeddings)
		}
		opts = append(opts, model.WithMaxSeqLen(n))
	}
	m, err := model.Load(dir, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("model %s from %s: %w", name, dir, err)
	}
	tok, err := tokenizer.LoadDir(dir)
	if err != nil {
		_ = m.Close()
		return nil, nil, fmt.Errorf("tokenizer of model %s in %s: %w", name, dir, err)
	}
	return m, tok, nil
}

// Workers are the running infer consumers of a process: their Group's
// Wait returns once the consume loops have drained and the batchers stopped.
type Workers struct {
	*pipeline.Group
	ID     string
	models []string
	// Adapters holds the LoRA adapters served unmerged (nil without them).
	Adapters *AdapterCache
}

// ModelInput is one model for Start: loaded already, served under Name.
type ModelInput struct {
	Name  string
	Model *model.Model
	Tok   *tokenizer.Tokenizer
	// Adapter, when not nil, makes Name a LoRA adapter served unmerged on
	// the model input named Base (listed before it, with the same Model):
	// its requests run in that model's batches with the adapter Adapter
	// returns.
	Adapter func(context.Context) (*model.Adapter, error)
	Base    string
}

// StartDirs loads the models (name → checkpoint directory) and starts the
// workers serving them; see Start. The models are closed when the workers end.
func StartDirs(ctx context.Context, bus *pipeline.Bus, models map[string]string, cfg Config, log zerolog.Logger, reg prometheus.Registerer) (*Workers, error) {
	return StartDirsWithAdapters(ctx, bus, models, nil, cfg, log, reg)
}

// Start starts, for each model, a continuous Batcher and Fetchers consume
// loops of the durable consumer infer-<model> on lf.req.*.<model>, and a
// heartbeat in lf_workers. They run until ctx ends or Stop is called, then
// drain: the consume loops finish their batches, then the batchers stop;
// Wait returns then.
func Start(ctx context.Context, bus *pipeline.Bus, models []ModelInput, cfg Config, log zerolog.Logger, reg prometheus.Registerer) (*Workers, error) {
	return start(ctx, bus, models, nil, cfg, log, reg)
}

// start is Start that closes owned when the workers end.
func start(ctx context.Context, bus *pipeline.Bus, models []ModelInput, owned []*model.Model, cfg Config, log zerolog.Logger, reg prometheus.Registerer) (*Workers, error) {
	if bus == nil || len(models) == 0 {
		return nil, fmt.Errorf("%w: workers need a bus and at least one model", ErrInvalidOption)
	}
	env, err := openWorker(ctx, bus, cfg, reg)
	if err != nil {
		return nil, err
	}
	cfg, store, hb, met := env.cfg, env.store, env.hb, env.met
	w := &Workers{Group: pipeline.NewGroup(ctx), ID: cfg.WorkerID}
	loops := pipeline.NewGroup(w.Context())
	// The batchers outlive ctx: they finish the batches the loops drain.
	batchers := pipeline.NewGroup(context.WithoutCancel(ctx))
	var rpcs []*pipeline.RPCServer
	stop := func() {
		for _, r := range rpcs {
			r.Stop(true)
		}
		batchers.Stop()
	}
	fail := func(err error) (*Workers, error) {
		stop()
		w.Stop()
		return nil, err
	}
	var consumers []*pipeline.Consumer
	byName := map[string]*model.Batcher{}
	for _, mi := range models {
		s := Served{Name: mi.Name, Model: mi.Model, Tok: mi.Tok}
		if mi.Adapter != nil { // in its base's batches
			base := byName[mi.Base]
			if base == nil {
				return fail(fmt.Errorf("%w: adapter %s on %s, which is not a model served before it", ErrInvalidOption, mi.Name, mi.Base))
			}
			s.Batcher, s.Scorer = base.WithAdapter(mi.Adapter), adaptedScorer(mi.Adapter)
		} else {
			b, err := model.NewBatcher(mi.Model, cfg.Slots, model.WithLogger(logging.Named(log, "largeforge.batcher")))
			if err != nil {
				return fail(fmt.Errorf("batcher of %s: %w", mi.Name, err))
			}
			byName[mi.Name], s.Batcher = b, b
			batchers.Go(func(ctx context.Context) error {
				if err := b.Run(ctx); err != nil {
					return fmt.Errorf("batcher of %s: %w", mi.Name, err)
				}
				return nil
			})
		}
		h, err := NewHandler(bus, s, store, met, cfg.WorkerID, log)
		if err != nil {
			return fail(err)
		}
		rs, err := h.ServeRPC(w.Context())
		if err != nil {
			return fail(err)
		}
		rpcs = append(rpcs, rs)
		c, err := requestConsumer(ctx, bus, cfg, mi.Name, h, log) // the name is a valid token: NewHandler checked it
		if err != nil {
			return fail(err)
		}
		consumers = append(consumers, c)
		w.models = append(w.models, mi.Name)
	}
	for _, mi := range models {
		if mi.Adapter == nil { // an adapter's model is its base's, counted once
			met.Memory.Add(mi.Model)
		}
	}
	for _, c := range consumers {
		loops.Consume(c, cfg.Fetchers)
	}
	// Capacity counts each batcher's slots once: an adapter's requests take
	// its base's slots.
	beat := schemas.Heartbeat{ID: w.ID, Role: schemas.WorkerInfer, Models: w.models, Capacity: cfg.Slots * len(byName), PID: os.Getpid(), StartedAt: time.Now().Unix()}
	loops.Go(func(ctx context.Context) error {
		hb.Heartbeat(ctx, HeartbeatKey(w.ID), cfg.HeartbeatEvery, func() []byte {
			beat.UpdatedAt = time.Now().Unix()
			data, _ := json.Marshal(beat)
			return data
		}, log)
		return nil
	})
	w.Go(func(context.Context) error {
		err := loops.Wait()
		stop()
		err = cmp.Or(err, batchers.Wait())
		for _, mi := range models {
			if mi.Adapter == nil {
				met.Memory.Remove(mi.Model)
			}
		}
		for _, m := range owned {
			_ = m.Close()
		}
		return err
	})
	return w, nil
}

// HeartbeatKey is a worker's key in lf_workers.
func HeartbeatKey(id string) string { return schemas.HeartbeatKey(schemas.WorkerInfer, id) }

// Models are the names served.
func (w *Workers) Models() []string { return w.models }

// workerEnv is what every infer worker, serving models or proxying an
// endpoint, opens before it starts: its config with the defaults, the job
// store, the lf_workers bucket for its heartbeat, and the metrics.
type workerEnv struct {
	cfg   Config
	store *jobs.Store
	hb    *pipeline.KV
	met   *Metrics
}

func openWorker(ctx context.Context, bus *pipeline.Bus, cfg Config, reg prometheus.Registerer) (workerEnv, error) {
	if err := cfg.Validate(); err != nil {
		return workerEnv{}, err
	}
	env := workerEnv{cfg: cfg.withDefaults()}
	var err error
	if env.store, err = jobs.Open(ctx, bus); err != nil {
		return workerEnv{}, err
	}
	if env.hb, err = bus.KV(ctx, pipeline.BucketWorkers); err != nil {
		return workerEnv{}, err
	}
	if env.met, err = NewMetrics(reg); err != nil {
		return workerEnv{}, err
	}
	return env, nil
}

// requestConsumer is the consumer of the requests of model name
// (lf.req.*.<name>, the durable Durable(name)) that h handles.
func requestConsumer(ctx context.Context, bus *pipeline.Bus, cfg Config, name string, h pipeline.Handler, log zerolog.Logger) (*pipeline.Consumer, error) {
	return pipeline.NewConsumer(ctx, bus, pipeline.ConsumerConfig{
		Stream: pipeline.StreamRequests, Durable: Durable(name), FilterSubjects: []string{"lf.req.*." + name}, Stage: Stage,
		Batch: cfg.Slots, MaxAckPending: cfg.Slots * cfg.Fetchers, AckWait: cfg.AckWait, MaxDeliver: cfg.MaxDeliver,
		NakDelay: cfg.NakDelay, MaxWait: cfg.MaxWait,
	}, h, logging.Named(log, "largeforge.consumer."+Durable(name)))
}
