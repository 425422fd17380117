package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// objectPutWindow is how many chunks of a put may await their ack.
const objectPutWindow = 64

// Objects is an object store (lf_models, lf_artifacts). Objects are
// streamed both ways in chunks, never held whole, and every read checks the
// SHA-256 digest the store recorded at the put.
type Objects struct {
	os     jetstream.ObjectStore
	bucket string
}

// ObjectInfo describes one object.
type ObjectInfo struct {
	Name     string
	Size     uint64
	Digest   string // "SHA-256=" and the base64url of the SHA-256
	Deleted  bool
	ModTime  time.Time
	Metadata map[string]string
}

// Objects opens the object store (it must exist: see EnsureTopology).
func (b *Bus) Objects(ctx context.Context, bucket string) (*Objects, error) {
	// A put publishes its chunks asynchronously: at most objectPutWindow
	// of them (128 KiB each) are in flight, which bounds a put's memory
	// and keeps a large object from outrunning the server's ingest queue
	// (the default window of 4000 stalls a 1 GiB put).
	js, err := jetstream.New(b.nc, jetstream.WithPublishAsyncMaxPending(objectPutWindow))
	if err != nil {
		return nil, fmt.Errorf("object store %s: %w", bucket, err)
	}
	os, err := js.ObjectStore(ctx, bucket)
	if err != nil {
		return nil, fmt.Errorf("object store %s: %w", bucket, err)
	}
	return &Objects{os: os, bucket: bucket}, nil
}

// Bucket is the store's name.
func (o *Objects) Bucket() string { return o.bucket }

// Put stores what r reads under name, replacing what was there.
func (o *Objects) Put(ctx context.Context, name string, r io.Reader) (ObjectInfo, error) {
	return o.PutWithMetadata(ctx, name, nil, r)
}

// PutWithMetadata is Put with metadata kept beside the object (small
// strings: a digest, a kind).
func (o *Objects) PutWithMetadata(ctx context.Context, name string, metadata map[string]string, r io.Reader) (ObjectInfo, error) {
	info, err := o.os.Put(ctx, jetstream.ObjectMeta{Name: name, Metadata: metadata}, r)
	if err != nil {
		return ObjectInfo{}, fmt.Errorf("put object %s/%s: %w", o.bucket, name, err)
	}
	return objectInfoOf(info), nil
}

// Info describes name; a missing (or deleted) object wraps
// ErrObjectNotFound.
func (o *Objects) Info(ctx context.Context, name string) (ObjectInfo, error) {
	info, err := o.os.GetInfo(ctx, name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return ObjectInfo{}, fmt.Errorf("object %s/%s: %w", o.bucket, name, ErrObjectNotFound)
	}
	if err != nil {
		return ObjectInfo{}, fmt.Errorf("object %s/%s: %w", o.bucket, name, err)
	}
	return objectInfoOf(info), nil
}

// Get opens name for reading. The reader streams the object's chunks; a
// read that reaches the end of an object whose bytes do not match its
// recorded size and digest fails with ErrDigestMismatch, so a reader that
// keeps what it read only after io.EOF never keeps a damaged object. A
// missing object wraps ErrObjectNotFound.
func (o *Objects) Get(ctx context.Context, name string) (*ObjectReader, error) {
	res, err := o.os.Get(ctx, name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, fmt.Errorf("object %s/%s: %w", o.bucket, name, ErrObjectNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get object %s/%s: %w", o.bucket, name, err)
	}
	info, err := res.Info()
	if err != nil {
		res.Close()
		return nil, fmt.Errorf("get object %s/%s: %w", o.bucket, name, err)
	}
	return &ObjectReader{res: res, info: objectInfoOf(info), name: o.bucket + "/" + name}, nil
}

// ObjectReader streams one object (Objects.Get).
type ObjectReader struct {
	res  jetstream.ObjectResult
	info ObjectInfo
	name string
	read uint64
}

// Info describes the object being read.
func (r *ObjectReader) Info() ObjectInfo { return r.info }

// Read reads the next bytes; at the end it checks the size and digest.
func (r *ObjectReader) Read(p []byte) (int, error) {
	n, err := r.res.Read(p)
	r.read += uint64(n)
	switch {
	case errors.Is(err, jetstream.ErrDigestMismatch):
		return n, fmt.Errorf("object %s: %w", r.name, ErrDigestMismatch)
	case err == io.EOF && r.read != r.info.Size:
		return n, fmt.Errorf("object %s: %d bytes of %d: %w", r.name, r.read, r.info.Size, ErrDigestMismatch)
	case err != nil && err != io.EOF:
		return n, fmt.Errorf("read object %s: %w", r.name, err)
	}
	return n, err
}

// Close stops the read.
func (r *ObjectReader) Close() error { return r.res.Close() }

// Delete removes name (its chunks are purged); a missing object wraps
// ErrObjectNotFound.
func (o *Objects) Delete(ctx context.Context, name string) error {
	if _, err := o.Info(ctx, name); err != nil {
		return err
	}
	err := o.os.Delete(ctx, name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return fmt.Errorf("object %s/%s: %w", o.bucket, name, ErrObjectNotFound)
	}
	if err != nil {
		return fmt.Errorf("delete object %s/%s: %w", o.bucket, name, err)
	}
	return nil
}

// List describes the objects of the store (none in an empty store, without
// error). Deleted objects are left out.
func (o *Objects) List(ctx context.Context) ([]ObjectInfo, error) {
	infos, err := o.os.List(ctx)
	if errors.Is(err, jetstream.ErrNoObjectsFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list objects %s: %w", o.bucket, err)
	}
	out := make([]ObjectInfo, 0, len(infos))
	for _, in := range infos {
		if !in.Deleted {
			out = append(out, objectInfoOf(in))
		}
	}
	return out, nil
}

// GetFile writes the object name into the file path.
func (o *Objects) GetFile(ctx context.Context, name, path string) error {
	if err := o.os.GetFile(ctx, name, path); err != nil {
		if errors.Is(err, jetstream.ErrObjectNotFound) {
			err = ErrObjectNotFound
		} else if errors.Is(err, jetstream.ErrDigestMismatch) {
			err = ErrDigestMismatch
		}
		return fmt.Errorf("get object %s/%s: %w", o.bucket, name, err)
	}
	return nil
}

func objectInfoOf(in *jetstream.ObjectInfo) ObjectInfo {
	return ObjectInfo{Name: in.Name, Size: in.Size, Digest: in.Digest, Deleted: in.Deleted, ModTime: in.ModTime, Metadata: in.Metadata}
}
