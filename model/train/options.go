package train

import (
	"fmt"

	"github.com/rs/zerolog"
)

type options struct {
	logger       zerolog.Logger
	backend      string
	maxSeqLen    int
	seed         int64
	tokenizerDir string
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

// WithMaxSeqLen sets the longest sequence trained on (default 512, at most
// the model's max_position_embeddings); longer examples are truncated.
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

// DefaultMaxSeqLen is the default longest training sequence.
const DefaultMaxSeqLen = 512

// DefaultSeed is the default shuffling seed (the Hugging Face Trainer's).
const DefaultSeed = 42
