package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

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
)

// Worker roles.
const (
	RoleInfer   = "infer"
	RoleResults = "results"
	RoleDataset = "dataset"
	RoleTrain   = "train"
)

// WorkerConfig is what `largeforge worker` runs with.
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

// Validate checks the flags of worker.
func (c WorkerConfig) Validate() error {
	switch c.Role {
	case RoleInfer:
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
	case RoleTrain:
		return c.Train.Validate()
	case RoleResults, RoleDataset:
		if c.DataDir == "" {
			return fmt.Errorf("--role %s needs --data-dir", c.Role)
		}
		return nil
	}
	return fmt.Errorf("--role %q: want %s, %s, %s or %s", c.Role, RoleInfer, RoleTrain, RoleResults, RoleDataset)
}

// parseModels turns name=DIR flags into a map; a bare name maps to "" (the
// model is fetched from lf_models).
func parseModels(specs []string) (map[string]string, error) {
	out := map[string]string{}
	for _, s := range specs {
		name, dir, ok := strings.Cut(s, "=")
		if name == "" || (ok && dir == "") {
			return nil, fmt.Errorf("--model %q: want name=DIR, or a name in lf_models", s)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("--model %s given twice", name)
		}
		out[name] = dir
	}
	return out, nil
}

// parseAdapters turns name=DIR flags into a map.
func parseAdapters(specs []string) (map[string]string, error) {
	out := map[string]string{}
	for _, s := range specs {
		name, dir, ok := strings.Cut(s, "=")
		if name == "" || !ok || dir == "" {
			return nil, fmt.Errorf("--adapter %q: want name=ADAPTER_DIR", s)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("--adapter %s given twice", name)
		}
		out[name] = dir
	}
	return out, nil
}

func newWorkerCmd() *cobra.Command {
	var wc WorkerConfig
	var models, adapters []string
	cmd := &cobra.Command{
		Use:   "worker --role infer --model NAME[=DIR] [--adapter NAME=DIR] [--model ...] | --role train | --role results|dataset --data-dir DIR",
		Short: "Run a worker against --nats: batch inference and scoring, training jobs, the results sink, or the dataset sink",
		Long: `Run one worker role against the NATS server of --nats until interrupted.
--role infer loads each --model name=DIR (a Hugging Face checkpoint directory; a bare name
is fetched from the lf_models object store, objects <name>/<file>), heartbeats
into lf_workers and serves the requests of lf.req.*.<name> through the model's continuous
batcher; start as many as you like, anywhere: they share the work queue. --adapter name=DIR
merges a PEFT LoRA adapter into the model of that name once at load (W + lora_alpha/r·B·A),
so the tuned model is served under the name. --role train takes training jobs (largeforge
train --submit) from LF_TRAIN one at a time, writes their progress into lf_jobs and stops a
cancelled one at its next step; when a train worker dies its job is redelivered after
--ack-wait to another, which resumes from the newest checkpoint in the job's output_dir
(a path every train worker must see). --role results
runs the results sink, which writes <data-dir>/jobs/<job>/ (run one per cluster). --role
dataset runs the dataset sink, the raw-record validator and the rejects writer, which write
<data-dir>/datasets/<name>/ (run one per cluster).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, err := parseModels(models)
			if err != nil {
				return err
			}
			wc.Models = m
			if wc.Adapters, err = parseAdapters(adapters); err != nil {
				return err
			}
			if wc.Role == RoleTrain {
				wc.Train.AckWait, wc.Train.Backend, wc.Train.WorkerID = wc.Infer.AckWait, wc.Infer.Backend, wc.Infer.WorkerID
				if cmd.Flags().Changed("max-deliver") {
					wc.Train.MaxDeliver = wc.Infer.MaxDeliver
				}
			}
			if err := wc.Validate(); err != nil {
				return err
			}
			return runWorker(cmd.Context(), wc)
		},
	}
	f := cmd.Flags()
	f.StringVar(&wc.Role, "role", RoleInfer, "worker role: infer, train, results or dataset")
	f.StringArrayVar(&models, "model", nil, "a model to serve: name=DIR, or a name to fetch from the lf_models object store (repeatable)")
	f.StringArrayVar(&adapters, "adapter", nil, "a LoRA adapter to merge into a --model at load: name=ADAPTER_DIR (repeatable)")
	cacheDefault := ""
	if d, err := os.UserCacheDir(); err == nil {
		cacheDefault = filepath.Join(d, "largeforge", "models")
	}
	f.StringVar(&wc.ModelCache, "model-cache", cacheDefault, "where models fetched from lf_models are kept")
	f.StringVar(&wc.DataDir, "data-dir", "./lf-data", "with --role results or dataset: where job results (<data-dir>/jobs) or datasets (<data-dir>/datasets) are written; with --role train: where the datasets of jobs without a data_dir are read")
	f.IntVar(&wc.Infer.Slots, "slots", infer.DefaultSlots, "continuous-batching slots per model (the requests generated at once)")
	f.IntVar(&wc.Infer.Fetchers, "fetchers", infer.DefaultFetchers, "consume loops per model")
	f.DurationVar(&wc.Infer.AckWait, "ack-wait", infer.DefaultAckWait, "redeliver a request (or training job) when its worker is silent this long")
	f.IntVar(&wc.Infer.MaxDeliver, "max-deliver", infer.DefaultMaxDeliver, "deliveries of a failing request before it goes to the DLQ as an error row (--role train: deliveries of a job, default 5)")
	f.StringVar(&wc.Infer.Backend, "backend", "", "GoMLX backend (default: GOMLX_BACKEND, else the pure Go one)")
	f.StringVar(&wc.Infer.WorkerID, "worker-id", "", "worker id in lf_workers (default host-pid)")
	return cmd
}

func runWorker(ctx context.Context, wc WorkerConfig) error {
	log := newLogger()
	reg := newRegistry()
	if err := serveMetrics(ctx, cfg.MetricsAddr, reg, log); err != nil {
		return err
	}
	bus, err := connect(ctx, log)
	if err != nil {
		return err
	}
	defer bus.Close()
	wlog := logging.Named(log, "largeforge.worker")
	switch wc.Role {
	case RoleDataset:
		dir, err := filepath.Abs(wc.DataDir)
		if err != nil {
			return err
		}
		metrics, err := dataset.NewMetrics(reg)
		if err != nil {
			return err
		}
		w, err := datasetsink.Start(ctx, bus, filepath.Join(dir, "datasets"), log, metrics)
		if err != nil {
			return err
		}
		wlog.Info().Dict("context", logging.Ctx().Str("role", wc.Role).Str("data_dir", dir)).Msg("dataset sink running; Ctrl-C to stop")
		return w.Wait()
	case RoleResults:
		dir, err := filepath.Abs(wc.DataDir)
		if err != nil {
			return err
		}
		w, err := resultsink.Start(ctx, bus, filepath.Join(dir, "jobs"), resultsink.Options{}, log)
		if err != nil {
			return err
		}
		wlog.Info().Dict("context", logging.Ctx().Str("role", wc.Role).Str("data_dir", dir)).Msg("results sink running; Ctrl-C to stop")
		return w.Wait()
	case RoleTrain:
		if wc.Train.DataDir, err = filepath.Abs(wc.DataDir); err != nil {
			return err
		}
		w, err := trainjobs.Start(ctx, bus, wc.Train, log, reg)
		if err != nil {
			return err
		}
		wlog.Info().Dict("context", logging.Ctx().Str("role", wc.Role).Str("worker_id", w.ID)).Msg("train worker running; Ctrl-C to stop")
		return w.Wait()
	default:
		for name, dir := range wc.Models {
			if dir != "" {
				continue
			}
			if wc.Models[name], err = infer.FetchModel(ctx, bus, name, wc.ModelCache); err != nil {
				return err
			}
		}
		w, err := infer.StartDirsWithAdapters(ctx, bus, wc.Models, wc.Adapters, wc.Infer, log, reg)
		if err != nil {
			return err
		}
		wlog.Info().Dict("context", logging.Ctx().Str("role", wc.Role).Strs("models", w.Models()).Str("worker_id", w.ID)).Msg("infer worker running; Ctrl-C to stop")
		return w.Wait()
	}
}

// JobWorkers are the job workers `largeforge up` runs: the results sink,
// a train worker and, when models are given, an infer worker serving them.
type JobWorkers struct {
	Sink  *resultsink.Workers
	Train *trainjobs.Worker
	Infer *infer.Workers // nil without models
}

// startJobWorkers is startJobWorkersWith without adapters.
func startJobWorkers(ctx context.Context, bus *pipeline.Bus, dataDir string, models map[string]string, log zerolog.Logger, reg prometheus.Registerer) (*JobWorkers, error) {
	return startJobWorkersWith(ctx, bus, dataDir, models, nil, log, reg)
}

// startJobWorkersWith starts the results sink under <dataDir>/jobs, a train
// worker reading the datasets of jobs without a data_dir under
// <dataDir>/datasets (dataDir is absolute), and an infer worker for models
// (name → checkpoint directory; "" fetches the model from lf_models into
// <dataDir>/models; no models: no infer worker) with the adapters (name →
// LoRA adapter directory) merged in. They run until ctx ends; Wait returns
// when they have drained.
func startJobWorkersWith(ctx context.Context, bus *pipeline.Bus, dataDir string, models, adapters map[string]string, log zerolog.Logger, reg prometheus.Registerer) (*JobWorkers, error) {
	for name, dir := range models {
		if dir != "" {
			continue
		}
		d, err := infer.FetchModel(ctx, bus, name, filepath.Join(dataDir, "models"))
		if err != nil {
			return nil, err
		}
		models[name] = d
	}
	sink, err := resultsink.Start(ctx, bus, filepath.Join(dataDir, "jobs"), resultsink.Options{}, log)
	if err != nil {
		return nil, err
	}
	jw := &JobWorkers{Sink: sink}
	if jw.Train, err = trainjobs.Start(ctx, bus, trainjobs.Config{DataDir: dataDir}, log, reg); err != nil {
		return nil, err
	}
	if len(models) > 0 {
		if jw.Infer, err = infer.StartDirsWithAdapters(ctx, bus, models, adapters, infer.Config{}, log, reg); err != nil {
			return nil, err
		}
	}
	return jw, nil
}

// Wait blocks until the workers have drained and returns the first error.
func (w *JobWorkers) Wait() error {
	var first error
	if w.Infer != nil {
		first = w.Infer.Wait()
	}
	if err := w.Train.Wait(); first == nil {
		first = err
	}
	if err := w.Sink.Wait(); first == nil {
		first = err
	}
	return first
}
