package storage

import (
	"context"
	"io"
)

// Store holds objects by key. Every write is atomic: a reader sees an
// object whole or not at all. Local keeps them in directories of this
// machine, Objects in the JetStream object store lf_artifacts, Mirror in
// both. Objects are immutable once created; a log is a series of created
// objects (rejects-NNNNN.jsonl), so no Store appends.
type Store interface {
	// Put stores what write produces under key, replacing what was there.
	Put(ctx context.Context, key string, write func(io.Writer) error) (Info, error)
	// Create is Put for an immutable object: it fails with ErrExists when
	// key is taken, whoever took it. write may be called again for another
	// key after ErrExists, so it must be repeatable.
	Create(ctx context.Context, key string, write func(io.Writer) error) (Info, error)
	// Open reads key's object; a missing one is ErrNotFound.
	Open(ctx context.Context, key string) (Reader, Info, error)
	// Stat describes key's object (no SHA256); a missing one is
	// ErrNotFound. An object whose write returned is never missed.
	Stat(ctx context.Context, key string) (Info, error)
	// List returns the objects whose keys start with prefix, sorted by key.
	// Their Info has no SHA256.
	List(ctx context.Context, prefix string) ([]Info, error)
	// Path is the file of this machine that holds key, for the objects a
	// person opens (output.jsonl, a model directory); reads and writes go
	// through the other methods. A store without local files (Objects)
	// fails with ErrNoPath.
	Path(key string) (string, error)
}

// Info describes a stored object.
type Info struct {
	Key    string
	Size   int64
	SHA256 string // hex; set by Put and Create, not by List or Open
}

// Reader is an object open for reading, streamed or at random (Parquet).
type Reader interface {
	io.Reader
	io.ReaderAt
	io.Closer
}
