package ingest

import "errors"

var (
	// ErrSource is returned when a source cannot be opened or read as a whole.
	ErrSource = errors.New("unreadable source")
	// ErrTooManyRejects is returned when rejects exceed Config.MaxRejects.
	ErrTooManyRejects = errors.New("too many rejected records")
	// ErrInvalidOption is returned for a bad Config value.
	ErrInvalidOption = errors.New("invalid ingest option")
	// ErrNotConfirmed is returned when the dataset sink did not confirm the run in time.
	ErrNotConfirmed = errors.New("dataset sink did not confirm the shards")
)
