package routing

import "errors"

var (
	// ErrInvalidOption is wrapped by New and option errors (no experts, an
	// invalid or repeated expert, a reserved name, a nil classifier).
	ErrInvalidOption = errors.New("invalid routing option")
	// ErrNoWorker: no expert (or model) has a live worker.
	ErrNoWorker = errors.New("no live worker for the model")
)
