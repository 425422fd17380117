package model

import (
	"fmt"

	"github.com/rs/zerolog"
)

// Defaults of the options.
const (
	// DefaultMaxBatch is the largest batch one graph runs; larger workloads are split.
	DefaultMaxBatch = 64
	// DefaultMaxSeqLen caps the context (prompt plus completion) when the
	// model's max_position_embeddings is larger.
	DefaultMaxSeqLen = 4096
)

// Option configures a Model or a Batcher.
type Option func(*options) error

type options struct {
	logger    zerolog.Logger
	backend   string
	maxBatch  int
	maxSeqLen int
	engine    string
}

func defaultOptions() options {
	return options{logger: zerolog.Nop(), maxBatch: DefaultMaxBatch}
}

func applyOptions(o *options, opts []Option) error {
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt(o); err != nil {
			return err
		}
	}
	return nil
}

// WithLogger sets the logger (default: none). Graph compilations and the
// chosen backend are logged.
func WithLogger(l zerolog.Logger) Option {
	return func(o *options) error {
		o.logger = l
		return nil
	}
}

// WithBackend selects the GoMLX backend by its configuration string, as
// GOMLX_BACKEND would ("go" is the pure Go backend, with options after a
// colon; "xla:cpu" or a PJRT plugin path needs a binary built with the xla
// tag). Empty means GOMLX_BACKEND, or DefaultBackend when that is unset.
func WithBackend(name string) Option {
	return func(o *options) error {
		o.backend = name
		return nil
	}
}

// WithMaxBatch sets the largest batch a graph is compiled for (default
// DefaultMaxBatch). For a Batcher it is ignored: slots set the batch.
func WithMaxBatch(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return fmt.Errorf("%w: max batch %d, want at least 1", ErrInvalidOption, n)
		}
		o.maxBatch = n
		return nil
	}
}

// WithMaxSeqLen caps the context length in tokens (default: the model's
// max_position_embeddings, at most DefaultMaxSeqLen).
func WithMaxSeqLen(n int) Option {
	return func(o *options) error {
		if n < 2 {
			return fmt.Errorf("%w: max sequence length %d, want at least 2", ErrInvalidOption, n)
		}
		o.maxSeqLen = n
		return nil
	}
}

// WithEngine selects how generation and scoring run: EngineNative
// (hand-written CPU kernels; the default on the pure Go backend) or
// EngineGraph (GoMLX graphs on the backend; the default on any other).
// Empty means LARGEFORGE_ENGINE, or the default. Training always uses the
// graphs.
func WithEngine(name string) Option {
	return func(o *options) error {
		o.engine = name
		return nil
	}
}
