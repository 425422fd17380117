package train

import (
	"errors"

	"github.com/largeforge/largeforge/schemas"
)

var (
	// ErrInvalidOption is wrapped by constructor and configuration errors.
	ErrInvalidOption = errors.New("invalid train worker option")
	// ErrBadMessage is wrapped when a training job message cannot be
	// decoded (schemas.DecodeTrainJob).
	ErrBadMessage = schemas.ErrBadTrainJob
)
