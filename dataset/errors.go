package dataset

import (
	"errors"

	"github.com/largeforge/largeforge/schemas"
)

var (
	// ErrInvalidName is returned for a dataset name that is not a safe
	// subject token and key element (schemas.ErrInvalidDatasetName).
	ErrInvalidName = schemas.ErrInvalidDatasetName
	// ErrBadShard is returned for a shard that cannot be decoded.
	ErrBadShard = errors.New("bad shard")
	// ErrBadPart is returned for a Parquet part that cannot be read.
	ErrBadPart = errors.New("bad parquet part")
)
