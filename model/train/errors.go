package train

import "errors"

var (
	// ErrInvalidOption is wrapped by an Option given a bad value.
	ErrInvalidOption = errors.New("train: invalid option")
	// ErrNoExamples is returned when there is nothing to train on.
	ErrNoExamples = errors.New("train: no training examples")
	// ErrUnsupportedRecord is wrapped when a record cannot be rendered for SFT
	// (a DPO record, a conversation without a gpt turn).
	ErrUnsupportedRecord = errors.New("train: unsupported record for sft")
	// ErrNotEnoughMemory: a run's estimated memory (EstimateMemory) is more
	// than the machine has available; nothing was allocated.
	ErrNotEnoughMemory = errors.New("train: not enough memory")
	// ErrBackend wraps a GoMLX failure while compiling or running a step.
	ErrBackend = errors.New("train: backend")
	// ErrNonFinite: a step's loss or gradient norm, or a weight about to be
	// saved, is NaN or infinite; the run stops at that step and the
	// checkpoints saved before it are left as they were.
	ErrNonFinite = errors.New("train: not finite")
)
