package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	trainjobs "github.com/largeforge/largeforge/consumers/train"
	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/model/train"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/storage"
)

func newTrainCmd() *cobra.Command {
	var (
		configPath, dataDir, jobID string
		resume, submit             bool
	)
	cmd := &cobra.Command{
		Use:   "train --config train.yaml [--submit]",
		Short: "Fine-tune a model here (SFT or DPO, full or LoRA) from an ingested dataset or Parquet/JSONL files",
		Long: `Fine-tune a local Hugging Face checkpoint on this machine. train.yaml holds method (sft, or
dpo with beta, default 0.1, against the base as frozen reference), model_name (the base model, a
model directory; base_model is an alias), the data (dataset: an ingested dataset's name, read from
the bus (its parts in lf_artifacts, on any machine) when a NATS server answers within a second and
holds it, else under --data-dir's default ./lf-data; with data_dir or --data-dir given, only
there; with --submit the train worker reads it from the bus or its own data directory; or
data_files: Parquet parts or JSONL files, with an optional format), eval_split (sft default 0.1:
held out and evaluated every eval_steps; 0 turns it off), max_seq_length, seed, and the
TrainingConfig fields (output_dir, num_epochs, per_device_batch_size, gradient_accumulation_steps,
learning_rate, weight_decay, warmup_ratio, max_grad_norm, optim, optim_args, lr_scheduler_type,
lr_scheduler_kwargs, save_steps, save_total_limit, logging_steps, eval_steps, ...) with their
defaults. An empty model_name is "Model name required"; one with .. or that is no model directory
"Invalid model path". optim: adamw_torch (default), adamw_torch_fused, adamw_hf, sgd (optim_args
"momentum=0.9,dampening=0,nesterov=true"), adafactor. lr_scheduler_type: linear, cosine,
cosine_with_restarts, polynomial, constant, constant_with_warmup, inverse_sqrt,
reduce_lr_on_plateau (needs eval_split > 0), cosine_with_min_lr (lr_scheduler_kwargs min_lr or
min_lr_rate), warmup_stable_decay (lr_scheduler_kwargs num_decay_steps), with Hugging Face's
lr_scheduler_kwargs. Checkpoints go to output_dir/checkpoint-<step>/ (weights, tokenizer,
trainer_state.json, training_args.json and training_args.bin, optimizer.safetensors) and the final
model to output_dir; a run whose output_dir holds checkpoints continues from the newest with the
same optimizer state, schedule position and data order.
A lora: section (r, lora_alpha, target_modules, lora_dropout, bias none|all|lora_only, task_type
CAUSAL_LM only; the defaults) trains LoRA adapters instead, saved as adapter_model.safetensors with
PEFT names, adapter_config.json and a README.md model card. packing: true packs examples into
max_seq_length rows; prompt_template: chat renders alpaca rows with the model's chat template
instead of the Alpaca prompt. Chat rows on a model without a chat_template are rendered with
ChatML, which is then written into the output's tokenizer_config.json.
Training runs in float32 on the CPU whatever bf16/fp16 say (fp16: true alone turns the default
bf16 off; the log says so once). Limits: per_device_batch_size at most
4096, gradient_accumulation_steps at most 65536, lora r at most 256, max_seq_length at most the
model's max_position_embeddings (default 512, or less when the model's is); before loading the
weights the run's memory (weights, gradients, optimizer state, activations for batch x
max_seq_length) is estimated and a run that needs more than the machine has available is refused.
With --submit the job goes to the bus instead (LF_TRAIN, lf.train.<job>): its id is printed,
a worker with --role train runs it, and ` + "`largeforge jobs status JOB`" + ` shows its step, loss,
learning rate, epoch and ETA. model_name, the data and output_dir are made absolute
and must be paths the train workers see (the same machine, or a shared filesystem).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if configPath == "" {
				return fmt.Errorf("--config is required")
			}
			data, err := os.ReadFile(configPath)
			if err != nil {
				return err
			}
			rc, err := train.ParseRunConfig(data)
			if err != nil {
				return err
			}
			rc.Resume = rc.Resume || resume
			// A submitted job without a data dir of its own reads its dataset
			// from the bus or the train worker's (up's --data-dir), wherever
			// this runs; a run here without one reads it from the bus when a
			// server answers and holds it (datasetRecords).
			fromBus := !submit && rc.Dataset != "" && rc.DataDir == "" && !cmd.Flags().Changed("data-dir")
			if rc.DataDir == "" && !fromBus && (!submit || cmd.Flags().Changed("data-dir")) {
				rc.DataDir = dataDir
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			log := newLogger(ctx)
			if submit {
				return withJobStore(ctx, func(bus *pipeline.Bus, s *jobs.Store) error {
					j, err := trainjobs.Submit(ctx, bus, s, rc, jobID)
					if err != nil {
						return err
					}
					fmt.Fprintln(cmd.OutOrStdout(), j.ID)
					return nil
				})
			}
			reg, pr := newRegistry(), newProbes()
			if err := serveMetrics(ctx, configFrom(ctx).MetricsAddr, reg, pr, log); err != nil {
				return err
			}
			var records train.RecordReader
			if fromBus {
				var done func()
				if records, done, err = datasetRecords(ctx, cmd, rc, dataDir, log); err != nil {
					return err
				}
				defer done()
			} else if records, err = trainjobs.Records(rc); err != nil {
				return err
			}
			pr.add("train", func() error { return nil }) // a local run is ready once its records are open
			res, err := train.Run(ctx, rc, log, train.WithRegisterer(reg), train.WithRecords(records))
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "trained %d steps, train_loss %.4f, %.1f samples/s; model in %s\n",
				res.GlobalStep, res.TrainLoss, res.SamplesPerSecond, rc.Training.OutputDir)
			return nil
		},
	}
	cmd.Flags().StringVar(&configPath, "config", "", "train.yaml")
	cmd.Flags().BoolVar(&resume, "resume", false, "continue from the newest output_dir/checkpoint-<step>/ (an error when there is none; a run resumes from one anyway when present)")
	cmd.Flags().StringVar(&dataDir, "data-dir", "./lf-data", "where ingested datasets live (for dataset:); when not given, a dataset is read from the bus when a server holds it, else here; with --submit only when given: the train worker's own (up's --data-dir) otherwise")
	cmd.Flags().BoolVar(&submit, "submit", false, "queue the job on the bus for a worker with --role train and print its id")
	cmd.Flags().StringVar(&jobID, "job-id", "", "with --submit: the job's id (default train_<random>)")
	return cmd
}

// errNoDataset is returned when train finds a dataset neither on the bus
// nor in the data dir.
var errNoDataset = errors.New("dataset not found")

// busDatasetWait is how long train, given a dataset and no data dir,
// waits for a NATS server before it reads the dataset from the local data
// dir (unless --wait-for-nats says otherwise).
const busDatasetWait = time.Second

// datasetRecords is the reader of rc's dataset for a run here with neither
// data_dir nor --data-dir: its parts on the bus (lf_artifacts, through a
// connection as the command's role) when a server answers within a short
// wait and holds them, else those of dataDir (--data-dir's default), as
// before the parts went to the bus. done closes the connection once the
// run has read them. Neither holding the dataset is errNoDataset, naming
// both.
func datasetRecords(ctx context.Context, cmd *cobra.Command, rc train.RunConfig, dataDir string, log zerolog.Logger) (train.RecordReader, func(), error) {
	cfg := *configFrom(ctx)
	if f := cmd.Flag("wait-for-nats"); f == nil || !f.Changed {
		cfg.NATS.WaitForServer = busDatasetWait
	}
	bus, err := connectAs(context.WithValue(ctx, configKey{}, &cfg), "largeforge-train", log)
	onBus := ""
	if err == nil {
		var objects *storage.Objects
		var parts *storage.Parts
		if objects, parts, err = trainjobs.DatasetParts(ctx, bus, rc.Dataset, log); err == nil && objects != nil {
			log.Info().Str("dataset", rc.Dataset).Str("from", pipeline.BucketArtifacts).Msg("reading the dataset's parts from the bus")
			records, err := trainjobs.RecordsFrom(rc, objects, parts)
			if err != nil {
				bus.Close()
				return nil, nil, err
			}
			return records, bus.Close, nil
		}
		bus.Close()
		onBus = fmt.Sprintf("no parts in %s at %s", pipeline.BucketArtifacts, cfg.NATS.URL)
	}
	if err != nil {
		onBus = err.Error()
		log.Debug().Err(err).Str("dataset", rc.Dataset).Msg("the dataset is not read from the bus")
	}
	rc.DataDir = dataDir
	local, err := storage.NewLocal(storage.DirsUnder(dataDir))
	if err == nil {
		var n int
		if n, err = countParts(ctx, local, rc.Dataset); err == nil && n > 0 {
			records, err := trainjobs.Records(rc)
			return records, func() {}, err
		}
	}
	inDir := fmt.Sprintf("no parts under %s", filepath.Join(dataDir, "datasets", rc.Dataset))
	if err != nil {
		inDir = err.Error()
	}
	return nil, nil, fmt.Errorf("%w: %s is neither on the bus (%s) nor in data dir %s (%s); ingest it (`largeforge ingest`), or name its data dir with --data-dir or data_dir",
		errNoDataset, rc.Dataset, onBus, dataDir, inDir)
}

// countParts is the number of dataset name's parts in store.
func countParts(ctx context.Context, store storage.Store, name string) (int, error) {
	parts, err := storage.DatasetParts(store, name)
	if err != nil {
		return 0, err
	}
	list, err := parts.List(ctx)
	return len(list), err
}

func newAdaptersCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "adapters",
		Short: "Work with LoRA adapters",
	}
	var base, adapter, output string
	merge := &cobra.Command{
		Use:   "merge --base DIR --adapter DIR --output DIR",
		Short: "Merge a LoRA adapter into its base model and write a full checkpoint",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if base == "" || adapter == "" || output == "" {
				return fmt.Errorf("--base, --adapter and --output are required")
			}
			if err := train.MergeAdapter(base, adapter, output); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "merged %s into %s: %s\n", adapter, base, output)
			return nil
		},
	}
	merge.Flags().StringVar(&base, "base", "", "base model directory")
	merge.Flags().StringVar(&adapter, "adapter", "", "adapter directory (adapter_config.json, adapter_model.safetensors)")
	merge.Flags().StringVar(&output, "output", "", "where to write the merged checkpoint")
	cmd.AddCommand(merge)
	return cmd
}
