package infer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/logging"
	"github.com/largeforge/largeforge/model"
	"github.com/largeforge/largeforge/model/tokenizer"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/schemas"
)

// Worker defaults.
const (
	DefaultSlots          = 16
	DefaultFetchers       = 2
	DefaultAckWait        = 15 * time.Second
	DefaultMaxDeliver     = 3
	DefaultHeartbeatEvery = 10 * time.Second
)

// Config configures the infer workers of a process.
type Config struct {
	Slots      int           // batcher slots per model, also its fetch batch (default 16)
	Fetchers   int           // consume loops per model, so one batch fills while another finishes (default 2)
	AckWait    time.Duration // default 15s (the redelivery delay after a worker dies); InProgress is sent every AckWait/3 while a batch runs
	MaxDeliver int           // default 3
	NakDelay   time.Duration // default: the pipeline's
	MaxWait    time.Duration // default: the pipeline's
	// HeartbeatEvery is the period of the lf_workers heartbeat (default 10s,
	// below the bucket's 30s TTL).
	HeartbeatEvery time.Duration
	WorkerID       string // default: <host>-<pid>
	Backend        string // GoMLX backend ("" : GOMLX_BACKEND or the pure Go one)
}

// Validate checks the config; errors wrap ErrInvalidOption.
func (c Config) Validate() error {
	for name, v := range map[string]int{"slots": c.Slots, "fetchers": c.Fetchers, "max deliver": c.MaxDeliver} {
		if v < 0 {
			return fmt.Errorf("%w: %s %d is negative", ErrInvalidOption, name, v)
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

// Workers are the running infer consumers of a process.
type Workers struct {
	ID     string
	cfg    Config
	models []string
	owned  []*model.Model // loaded by StartDirs; closed at the end

	wg       sync.WaitGroup // consume loops
	stopB    context.CancelFunc
	batchers sync.WaitGroup
	done     chan struct{}
	mu       sync.Mutex
	errs     []error
}

// ModelInput is one model for Start: loaded already, served under Name.
type ModelInput struct {
	Name  string
	Model *model.Model
	Tok   *tokenizer.Tokenizer
}

// StartDirs loads the models (name → checkpoint directory) and starts the
// workers serving them; see Start. The models are closed when the workers end.
func StartDirs(ctx context.Context, bus *pipeline.Bus, models map[string]string, cfg Config, log zerolog.Logger, reg prometheus.Registerer) (*Workers, error) {
	return StartDirsWithAdapters(ctx, bus, models, nil, cfg, log, reg)
}

// Start starts, for each model, a continuous Batcher and Fetchers consume
// loops of the durable consumer infer-<model> on lf.req.*.<model>, and a
// heartbeat in lf_workers. They run until ctx ends, then drain: the consume
// loops finish their batches, then the batchers stop; Wait returns then.
func Start(ctx context.Context, bus *pipeline.Bus, models []ModelInput, cfg Config, log zerolog.Logger, reg prometheus.Registerer) (*Workers, error) {
	if bus == nil || len(models) == 0 {
		return nil, fmt.Errorf("%w: workers need a bus and at least one model", ErrInvalidOption)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	kv, err := bus.KV(ctx, pipeline.BucketJobs)
	if err != nil {
		return nil, err
	}
	store, err := jobs.NewStore(kv)
	if err != nil {
		return nil, err
	}
	met, err := NewMetrics(reg)
	if err != nil {
		return nil, err
	}
	bctx, stopB := context.WithCancel(context.WithoutCancel(ctx))
	w := &Workers{ID: cfg.WorkerID, cfg: cfg, stopB: stopB, done: make(chan struct{})}
	var consumers []*pipeline.Consumer
	var rpcs []*pipeline.RPCServer
	stopRPC := func() {
		for _, r := range rpcs {
			r.Stop(true)
		}
	}
	for _, mi := range models {
		b, err := model.NewBatcher(mi.Model, cfg.Slots, model.WithLogger(logging.Named(log, "largeforge.batcher")))
		if err != nil {
			stopRPC()
			stopB()
			return nil, fmt.Errorf("batcher of %s: %w", mi.Name, err)
		}
		w.batchers.Add(1)
		go func() {
			defer w.batchers.Done()
			if err := b.Run(bctx); err != nil {
				w.fail(fmt.Errorf("batcher of %s: %w", mi.Name, err))
			}
		}()
		h, err := NewHandler(bus, Served{Name: mi.Name, Model: mi.Model, Tok: mi.Tok, Batcher: b}, store, met, cfg.WorkerID, log)
		if err != nil {
			stopRPC()
			stopB()
			return nil, err
		}
		rs, err := h.ServeRPC(ctx)
		if err != nil {
			stopRPC()
			stopB()
			return nil, err
		}
		rpcs = append(rpcs, rs)
		filter := "lf.req.*." + mi.Name // the name is a valid token: NewHandler checked it
		c, err := pipeline.NewConsumer(ctx, bus, pipeline.ConsumerConfig{
			Stream: pipeline.StreamRequests, Durable: Durable(mi.Name), FilterSubjects: []string{filter}, Stage: Stage,
			Batch: cfg.Slots, MaxAckPending: cfg.Slots * cfg.Fetchers, AckWait: cfg.AckWait, MaxDeliver: cfg.MaxDeliver,
			NakDelay: cfg.NakDelay, MaxWait: cfg.MaxWait,
		}, h, logging.Named(log, "largeforge.consumer."+Durable(mi.Name)))
		if err != nil {
			stopRPC()
			stopB()
			return nil, err
		}
		consumers = append(consumers, c)
		w.models = append(w.models, mi.Name)
	}
	for _, c := range consumers {
		for range cfg.Fetchers {
			w.wg.Add(1)
			go func() {
				defer w.wg.Done()
				if err := c.Run(ctx); err != nil {
					w.fail(err)
				}
			}()
		}
	}
	hb, err := bus.KV(ctx, pipeline.BucketWorkers)
	if err != nil {
		stopRPC()
		stopB()
		return nil, err
	}
	go func() {
		w.heartbeat(ctx, hb, log)
		w.wg.Wait()
		stopRPC()
		stopB()
		w.batchers.Wait()
		for _, m := range w.owned {
			_ = m.Close()
		}
		close(w.done)
	}()
	return w, nil
}

func (w *Workers) fail(err error) {
	w.mu.Lock()
	w.errs = append(w.errs, err)
	w.mu.Unlock()
}

// HeartbeatKey is a worker's key in lf_workers.
func HeartbeatKey(id string) string { return schemas.HeartbeatKey(schemas.WorkerInfer, id) }

// heartbeat puts the worker's schemas.Heartbeat into lf_workers every HeartbeatEvery
// until ctx ends, then deletes it.
func (w *Workers) heartbeat(ctx context.Context, kv jetstream.KeyValue, log zerolog.Logger) {
	hb := schemas.Heartbeat{ID: w.ID, Role: schemas.WorkerInfer, Models: w.models, Capacity: w.cfg.Slots * len(w.models), PID: os.Getpid(), StartedAt: time.Now().Unix()}
	put := func() {
		hb.UpdatedAt = time.Now().Unix()
		data, _ := json.Marshal(hb)
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, err := kv.Put(pctx, HeartbeatKey(w.ID), data); err != nil && !errors.Is(err, context.Canceled) {
			log.Warn().Err(err).Msg("worker heartbeat")
		}
	}
	put()
	t := time.NewTicker(w.cfg.HeartbeatEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			_ = kv.Delete(dctx, HeartbeatKey(w.ID))
			cancel()
			return
		case <-t.C:
			put()
		}
	}
}

// Models are the names served.
func (w *Workers) Models() []string { return w.models }

// Wait blocks until the consume loops have drained and the batchers stopped,
// and returns the first error.
func (w *Workers) Wait() error {
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.errs) > 0 {
		return w.errs[0]
	}
	return nil
}
