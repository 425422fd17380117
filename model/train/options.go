package train

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/largeforge/largeforge/schemas"
)

type options struct {
	logger       zerolog.Logger
	backend      string
	maxSeqLen    int
	seed         int64
	tokenizerDir string
	chatTemplate string
	lora         *schemas.LoraConfig
	registerer   prometheus.Registerer
	progress     *progressHook                    // WithProgress (hooks.go)
	checkpoint   func(dir string, step int) error // WithCheckpoint (hooks.go)
	packing      bool
	records      RecordReader // WithRecords: read by Run, not by New
	evalRecords  RecordReader // WithEvalRecords: read by Run, not by New
	dataset      string       // WithDatasetName: named in an adapter's model card
	engine       string       // WithEngine
	runName      string       // WithRunName (plot.go)
}

// WithDatasetName names the training data in an adapter's README.md model
// card (Run passes the dataset's name, or the data files).
func WithDatasetName(name string) Option {
	return func(o *options) error { o.dataset = name; return nil }
}

// Option configures a Trainer.
type Option func(*options) error

// WithLogger sets the logger of training progress (default: none).
func WithLogger(l zerolog.Logger) Option {
	return func(o *options) error { o.logger = l; return nil }
}

// WithBackend names the GoMLX backend configuration (default
// model.DefaultBackend, the pure Go backend).
func WithBackend(name string) Option {
	return func(o *options) error { o.backend = name; return nil }
}

// WithMaxSeqLen sets the longest sequence trained on (default
// DefaultMaxSeqLen, or the model's max_position_embeddings when that is
// shorter); longer examples are truncated. More than the model's
// max_position_embeddings is refused by New ("Invalid max_seq_length").
func WithMaxSeqLen(n int) Option {
	return func(o *options) error {
		if n < 2 {
			return fmt.Errorf("%w: max sequence length %d is below 2", ErrInvalidOption, n)
		}
		o.maxSeqLen = n
		return nil
	}
}

// WithSeed sets the seed of the per-epoch shuffling (default 42).
func WithSeed(seed int64) Option {
	return func(o *options) error { o.seed = seed; return nil }
}

// WithTokenizerDir names the directory whose tokenizer files are copied
// into every saved checkpoint and the final model (default: none copied).
func WithTokenizerDir(dir string) Option {
	return func(o *options) error { o.tokenizerDir = dir; return nil }
}

// WithChatTemplate writes src as the chat_template of the tokenizer_config.json
// of every saved checkpoint and the final model, after the tokenizer files
// are copied: the template the chat examples were rendered with, so that
// the model serves chat as it was trained (Run passes ChatML when the base
// model has none of its own; see TrainedChatTemplate).
func WithChatTemplate(src string) Option {
	return func(o *options) error { o.chatTemplate = src; return nil }
}

// DefaultMaxSeqLen is the default longest training sequence (the model's
// max_position_embeddings when that is shorter).
const DefaultMaxSeqLen = 512

// DefaultSeed is the default shuffling seed (the Hugging Face Trainer's;
// a train.yaml's default, schemas.DefaultTrainSeed).
const DefaultSeed = schemas.DefaultTrainSeed

// WithLoRA trains LoRA adapters (§2.2) on the target modules instead of
// every weight; the base stays frozen. Checkpoints hold the adapter (§4.2).
// bias "all" also trains every bias of the model, "lora_only" those of the
// adapted modules (saved in the adapter under PEFT names); lora_dropout
// drops the adapters' input features in training (a mask over the columns
// of lora_A per micro-batch, drawn from the seed and step; none in
// evaluation), a weight-space form of PEFT's dropout on the adapter input.
func WithLoRA(c schemas.LoraConfig) Option {
	return func(o *options) error {
		if err := c.Validate(); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidOption, err)
		}
		o.lora = &c
		return nil
	}
}

// WithRegisterer exports the §5.1 and §5.2 metrics as gauges (MetricNames)
// on reg, updated every logging_steps and eval_steps.
func WithRegisterer(reg prometheus.Registerer) Option {
	return func(o *options) error {
		if reg == nil {
			return fmt.Errorf("%w: nil registerer", ErrInvalidOption)
		}
		o.registerer = reg
		return nil
	}
}

// WithPacking packs the training examples (after truncation, in their
// order) into rows of up to the maximum length, several examples a row,
// before the per-epoch shuffling of rows: no padding is computed. Each
// example keeps its loss mask, and the first token of each is never a
// target of the one before; positions run on across a row and attention
// crosses the examples' boundaries, as in TRL's default packing.
func WithPacking() Option {
	return func(o *options) error { o.packing = true; return nil }
}

// WithRecords hands Run the reader of its training records (an ingested
// dataset's parts, data files); New ignores it.
func WithRecords(r RecordReader) Option {
	return func(o *options) error {
		if r == nil {
			return fmt.Errorf("%w: nil record reader", ErrInvalidOption)
		}
		o.records = r
		return nil
	}
}

// WithEngine names the engine of SFT's forward and backward passes:
// schemas.TrainEngineNative (the CPU kernels) or schemas.TrainEngineGraph
// (GoMLX graphs). Without it New picks native on the pure Go backend for
// full fine-tuning and graph otherwise; New refuses native where it cannot
// run (LoRA).
func WithEngine(name string) Option {
	return func(o *options) error {
		if name != schemas.TrainEngineNative && name != schemas.TrainEngineGraph {
			return fmt.Errorf("%w: engine %q (want %s or %s)", ErrInvalidOption, name, schemas.TrainEngineNative, schemas.TrainEngineGraph)
		}
		o.engine = name
		return nil
	}
}
