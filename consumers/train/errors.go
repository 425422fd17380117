package train

import "errors"

var (
	// ErrInvalidOption is wrapped by constructor and configuration errors.
	ErrInvalidOption = errors.New("invalid train worker option")
	// ErrBadMessage is wrapped when a training job message cannot be decoded.
	ErrBadMessage = errors.New("bad training job message")
)
