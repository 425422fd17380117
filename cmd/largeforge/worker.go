package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/largeforge/largeforge/consumers/infer"
	"github.com/largeforge/largeforge/logging"
)

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
	var models, adapters, lora []string
	cmd := &cobra.Command{
		Use:   "worker --role infer --model NAME[=DIR] [--adapter NAME=DIR] [--model ...] | --role train | --role results|dataset --data-dir DIR",
		Short: "Run a worker against --nats: batch inference and scoring, training jobs, the results sink, or the dataset sink",
		Long: `Run one worker role against the NATS server of --nats until interrupted.
--role infer loads each --model name=DIR (a Hugging Face checkpoint directory; a bare name
is fetched, verified, from the lf_models object store into --model-cache/<name>/<digest>; see
largeforge model push), heartbeats
into lf_workers and serves the requests of lf.req.*.<name> through the model's continuous
batcher; start as many as you like, anywhere: they share the work queue. --expert NAME serves
the expert NAME of the lf_experts bucket: its model_path (a directory, or a model in
lf_models) under the expert's name with its max_tokens as the context, or, when it has an
endpoint, a proxy that forwards its requests and batch rows to that OpenAI-compatible server
and is live only while the server's health check passes. --adapter name=DIR
merges a PEFT LoRA adapter into the model of that name once at load (W + lora_alpha/r·B·A),
so the tuned model is served under the name. --role train takes training jobs (largeforge
train --submit) from LF_TRAIN one at a time, writes their progress into lf_jobs and stops a
cancelled one at its next step; its checkpoints and final output are stored in lf_artifacts
(train/<job>/...) and the trained model pushed to lf_models under the job id; when a train
worker dies its job is redelivered after --ack-wait to another, on any machine, which
resumes from the newest stored checkpoint. --role results runs the results sink, which
stores each job's results in lf_artifacts (jobs/<job>/..., mirrored to <data-dir>/jobs/<job>/;
` + "`largeforge jobs results JOB`" + ` reads them anywhere). --role dataset runs the dataset sink, the
raw-record validator and the rejects writer, which store parts and rejects in lf_artifacts
(datasets/<name>/..., mirrored to <data-dir>/datasets/<name>/). Any number of each may run.`,
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
			if wc.LoRA, err = parseLoRA(lora); err != nil {
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
	f.StringArrayVar(&wc.ExpertNames, "expert", nil, "serve an expert of the lf_experts bucket: its model_path with its max_tokens as the context, or a proxy to its endpoint (repeatable)")
	f.StringArrayVar(&adapters, "adapter", nil, "a LoRA adapter to merge into a --model at load: name=ADAPTER_DIR (repeatable)")
	f.StringArrayVar(&lora, "lora", nil, "a LoRA adapter served unmerged as a model id of its own in the batches of a --model: ID=BASE:ADAPTER_DIR, or ID=BASE:NAME pushed to lf_models (repeatable)")
	f.Int64Var(&wc.Infer.AdapterBytes, "adapter-bytes", 0, "with --lora: the most bytes of adapters held; the least recently used are unloaded and loaded again when asked for (0: no limit)")
	cacheDefault := ""
	if d, err := os.UserCacheDir(); err == nil {
		cacheDefault = filepath.Join(d, "largeforge", "models")
	}
	f.StringVar(&wc.ModelCache, "model-cache", cacheDefault, "where models fetched from lf_models are kept")
	f.StringArrayVar(&wc.ServePushed, "serve-pushed", nil, "serve models pushed to lf_models as they come, without a restart: all, or a name such as a fine-tuning job's fine_tuned_model (repeatable)")
	f.StringVar(&wc.DataDir, "data-dir", "./lf-data", "with --role results or dataset: where job results (<data-dir>/jobs) or datasets (<data-dir>/datasets) are written; with --role train: where the datasets of jobs without a data_dir are read")
	f.StringVar(&wc.Train.OutputRoot, "output-root", "", "with --role train: keep each job's local output under <output-root>/<job> rather than its output_dir (its checkpoints and final model are in lf_artifacts and lf_models either way)")
	f.IntVar(&wc.Infer.Slots, "slots", infer.DefaultSlots, "continuous-batching slots per model (the requests generated at once)")
	f.IntVar(&wc.Infer.Fetchers, "fetchers", infer.DefaultFetchers, "consume loops per model")
	f.DurationVar(&wc.Infer.AckWait, "ack-wait", infer.DefaultAckWait, "redeliver a request (or training job) when its worker is silent this long")
	f.IntVar(&wc.Infer.MaxDeliver, "max-deliver", infer.DefaultMaxDeliver, "deliveries of a failing request before it goes to the DLQ as an error row (--role train: deliveries of a job, default 5)")
	f.StringVar(&wc.Infer.Backend, "backend", "", "GoMLX backend (default: GOMLX_BACKEND, else the pure Go one)")
	f.StringVar(&wc.Infer.WorkerID, "worker-id", "", "worker id in lf_workers (default host-pid)")
	return cmd
}

func runWorker(ctx context.Context, wc WorkerConfig) error {
	log := newLogger(ctx)
	reg, pr := newRegistry(), newProbes()
	if err := serveMetrics(ctx, configFrom(ctx).MetricsAddr, reg, pr, log); err != nil {
		return err
	}
	// A worker runs on its role's credential: it checks the topology, an
	// admin applies it.
	bus, err := connectAs(ctx, "largeforge-worker-"+wc.Role, log)
	if err != nil {
		return err
	}
	defer bus.Close()
	r, err := findRole(wc.Role)
	if err != nil {
		return err
	}
	bm, reportJobs := busMetricsFor(wc.Role, wc)
	if err := registerBusMetrics(ctx, bus, reg, bm, reportJobs, log); err != nil {
		return err
	}
	w, err := r.start(ctx, bus, wc, log, reg)
	if err != nil {
		return err
	}
	wlog := logging.Named(log, "largeforge.worker")
	wlog.Info().Dict("context", w.describe(logging.Ctx().Str("role", wc.Role))).Msg(r.running)
	pr.addBus(bus)
	return waitReady(pr, "worker "+wc.Role, w.Wait)
}

// parseLoRA turns ID=BASE:DIR flags into adapter specs.
func parseLoRA(specs []string) ([]infer.AdapterSpec, error) {
	var out []infer.AdapterSpec
	for _, s := range specs {
		id, rest, ok := strings.Cut(s, "=")
		base, dir, ok2 := strings.Cut(rest, ":")
		if !ok || !ok2 || id == "" || base == "" || dir == "" {
			return nil, fmt.Errorf("--lora %q: want ID=BASE:ADAPTER_DIR", s)
		}
		out = append(out, infer.AdapterSpec{Name: id, Base: base, Dir: dir})
	}
	return out, nil
}
