package ingest

import (
	"errors"

	"github.com/largeforge/largeforge/dataset/read"
)

var (
	// ErrSource is returned when a source cannot be opened or read as a
	// whole (read.ErrSource).
	ErrSource = read.ErrSource
	// ErrTooManyRejects is returned when rejects exceed Config.MaxRejects.
	ErrTooManyRejects = errors.New("too many rejected records")
	// ErrInvalidOption is returned for a bad Config value.
	ErrInvalidOption = errors.New("invalid ingest option")
	// ErrNotConfirmed is returned when the dataset sink did not confirm the run in time.
	ErrNotConfirmed = errors.New("dataset sink did not confirm the shards")
	// ErrNothingPersisted is returned when no row of a source could join the
	// dataset (an empty source, or every row rejected); rows that the dataset
	// already held (duplicates) are not a failure.
	ErrNothingPersisted = errors.New("nothing to add to the dataset")
)
