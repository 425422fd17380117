package gateway

import (
	"errors"

	"github.com/largeforge/largeforge/routing"
)

var (
	// ErrInvalidOption is wrapped by Config.Validate and New errors.
	ErrInvalidOption = errors.New("invalid gateway option")
	// ErrUnknownModel: no live worker serves the model and lf_models does
	// not hold it (HTTP 404).
	ErrUnknownModel = errors.New("unknown model")
	// ErrNoWorker: the model is known but no worker answered within
	// Config.WorkerWait (HTTP 503).
	ErrNoWorker = routing.ErrNoWorker
)
