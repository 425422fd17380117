package dataset

import "errors"

var (
	// ErrInvalidName is returned for a dataset name that is not a safe subject token and directory name.
	ErrInvalidName = errors.New("invalid dataset name")
	// ErrBadShard is returned for a shard that cannot be decoded.
	ErrBadShard = errors.New("bad shard")
	// ErrBadPart is returned for a Parquet part that cannot be read.
	ErrBadPart = errors.New("bad parquet part")
)
