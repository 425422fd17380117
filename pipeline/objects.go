package pipeline

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// objectPutWindow is how many chunks of a put may await their ack.
const objectPutWindow = 64

// objectChunkWait is how long a Get waits for the next chunk of an object
// (the server sends an idle heartbeat every 5 s, so a live server is never
// silent this long).
const objectChunkWait = 30 * time.Second

// Objects is an object store (lf_models, lf_artifacts). Objects are
// streamed both ways in chunks, never held whole, and every read checks the
// SHA-256 digest the store recorded at the put.
type Objects struct {
	os     jetstream.ObjectStore
	push   nats.JetStreamContext // Get's ordered push consumer
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
	push, err := b.nc.JetStream()
	if err != nil {
		return nil, fmt.Errorf("object store %s: %w", bucket, err)
	}
	return &Objects{os: os, push: push, bucket: bucket}, nil
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
//
// jetstream's own Get gives the whole read the client's default timeout
// (5 s) when ctx has no deadline, and uses that deadline for every read of
// its pipe, so an object that takes longer than that to read fails with
// "read pipe: i/o timeout". This Get reads the chunks itself from an
// ordered consumer (the same consumer, and so the same permissions): the
// read lasts as long as ctx, and only a wait of objectChunkWait for one
// chunk fails it. The server's flow control bounds what is buffered.
func (o *Objects) Get(ctx context.Context, name string) (*ObjectReader, error) {
	in, err := o.os.GetInfo(ctx, name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, fmt.Errorf("object %s/%s: %w", o.bucket, name, ErrObjectNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get object %s/%s: %w", o.bucket, name, err)
	}
	if in.Opts != nil && in.Opts.Link != nil {
		return nil, fmt.Errorf("get object %s/%s: a link: %w", o.bucket, name, ErrInvalidOption)
	}
	if in.NUID == "" {
		return nil, fmt.Errorf("get object %s/%s: %w", o.bucket, name, jetstream.ErrBadObjectMeta)
	}
	want, err := jetstream.DecodeObjectDigest(in.Digest)
	if err != nil {
		return nil, fmt.Errorf("get object %s/%s: %w", o.bucket, name, err)
	}
	r := &ObjectReader{ctx: ctx, info: objectInfoOf(in), name: o.bucket + "/" + name, want: want, sum: sha256.New(), done: in.Size == 0}
	if r.done {
		return r, nil
	}
	chunks := fmt.Sprintf("$O.%s.C.%s", o.bucket, in.NUID)
	r.sub, err = o.push.SubscribeSync(chunks, nats.OrderedConsumer(), nats.BindStream("OBJ_"+o.bucket))
	if err != nil {
		return nil, fmt.Errorf("get object %s/%s: %w", o.bucket, name, err)
	}
	return r, nil
}

// ObjectReader streams one object (Objects.Get).
type ObjectReader struct {
	ctx  context.Context
	sub  *nats.Subscription
	info ObjectInfo
	name string
	want []byte    // the recorded SHA-256
	sum  hash.Hash // of the bytes received
	buf  []byte    // what is left of the current chunk
	read uint64
	done bool // the last chunk was received
	err  error
}

// Info describes the object being read.
func (r *ObjectReader) Info() ObjectInfo { return r.info }

// Read reads the next bytes; at the end it checks the size and digest.
func (r *ObjectReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	for len(r.buf) == 0 {
		if r.done {
			r.err = r.check()
			return 0, r.err
		}
		if r.err = r.next(); r.err != nil {
			return 0, r.err
		}
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// next receives the next chunk.
func (r *ObjectReader) next() error {
	ctx, cancel := context.WithTimeout(r.ctx, objectChunkWait)
	defer cancel()
	m, err := r.sub.NextMsgWithContext(ctx)
	if err != nil {
		if r.ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("no chunk for %s: %w", objectChunkWait, err)
		}
		return fmt.Errorf("read object %s after %d bytes: %w", r.name, r.read, err)
	}
	meta, err := m.Metadata()
	if err != nil {
		return fmt.Errorf("read object %s: %w", r.name, err)
	}
	r.buf = m.Data
	r.read += uint64(len(m.Data))
	r.sum.Write(m.Data)
	if r.read > r.info.Size {
		return fmt.Errorf("object %s: more than its %d bytes: %w", r.name, r.info.Size, ErrDigestMismatch)
	}
	if meta.NumPending == 0 {
		r.done = true
		_ = r.sub.Unsubscribe()
	}
	return nil
}

// check ends a read: io.EOF if the object is whole.
func (r *ObjectReader) check() error {
	if r.read != r.info.Size {
		return fmt.Errorf("object %s: %d bytes of %d: %w", r.name, r.read, r.info.Size, ErrDigestMismatch)
	}
	if !bytes.Equal(r.sum.Sum(nil), r.want) {
		return fmt.Errorf("object %s: %w", r.name, ErrDigestMismatch)
	}
	return io.EOF
}

// Close stops the read.
func (r *ObjectReader) Close() error {
	if r.sub == nil || r.done {
		return nil
	}
	r.done = true
	if r.err == nil {
		r.err = fmt.Errorf("object %s: %w", r.name, io.ErrClosedPipe)
	}
	if err := r.sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrBadSubscription) {
		return fmt.Errorf("close object %s: %w", r.name, err)
	}
	return nil
}

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

// GetFile writes the object name into the file path (streamed; a damaged
// object wraps ErrDigestMismatch and leaves what was read in path).
func (o *Objects) GetFile(ctx context.Context, name, path string) error {
	r, err := o.Get(ctx, name)
	if err != nil {
		return err
	}
	defer r.Close()
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("get object %s/%s: %w", o.bucket, name, err)
	}
	_, err = io.Copy(f, r)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("get object %s/%s: %w", o.bucket, name, cerr)
	}
	return err
}

func objectInfoOf(in *jetstream.ObjectInfo) ObjectInfo {
	return ObjectInfo{Name: in.Name, Size: in.Size, Digest: in.Digest, Deleted: in.Deleted, ModTime: in.ModTime, Metadata: in.Metadata}
}
