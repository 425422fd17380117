package pipeline

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// objectPutWindow is how many bytes of a put may await their ack: 256
// chunks, a quarter of the server's stream ingest queue (128 MiB), so a few
// puts at once (modelstore uploads a model's files two at a time) stay
// well under it.
const objectPutWindow = 32 << 20

// objectChunkWait is how long a Get waits for the next chunk of an object
// (the server sends an idle heartbeat every 5 s, so a live server is never
// silent this long).
var objectChunkWait = 30 * time.Second

// Objects is an object store (lf_models, lf_artifacts). Objects are
// streamed both ways in chunks, never held whole, and every read checks the
// SHA-256 digest the store recorded at the put.
type Objects struct {
	js     jetstream.JetStream
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
	// Each put keeps its own window of objectPutWindow bytes in flight
	// (see PutWithMetadata); the context's window is only their sum.
	js, err := jetstream.New(b.nc)
	if err != nil {
		return nil, fmt.Errorf("object store %s: %w", bucket, err)
	}
	octx, cancel := ackContext(ctx) // one request: the store's stream info
	defer cancel()
	os, err := js.ObjectStore(octx, bucket)
	if err != nil {
		return nil, fmt.Errorf("object store %s: %w", bucket, err)
	}
	push, err := b.nc.JetStream()
	if err != nil {
		return nil, fmt.Errorf("object store %s: %w", bucket, err)
	}
	return &Objects{js: js, os: os, push: push, bucket: bucket}, nil
}

// Bucket is the store's name.
func (o *Objects) Bucket() string { return o.bucket }

// Put stores what r reads under name, replacing what was there.
func (o *Objects) Put(ctx context.Context, name string, r io.Reader) (ObjectInfo, error) {
	return o.PutWithMetadata(ctx, name, nil, r)
}

// PutWithMetadata is Put with metadata kept beside the object (small
// strings: a digest, a kind).
//
// The chunks are published here, not by jetstream's Put: that Put makes a
// JetStream context of its own, with the default window of 4000 unacked
// publishes (500 MiB of 128 KiB chunks), so a large object overran the
// server's stream ingest queue (128 MiB: "429 too many requests") and each
// publish had the client's 5 s default timeout. Here at most
// objectPutWindow bytes of chunks await their ack, each for objectChunkWait when
// ctx has no deadline; the subjects, the meta message and the purge of the
// chunks of the object replaced are jetstream's (and so are the
// permissions needed).
func (o *Objects) PutWithMetadata(ctx context.Context, name string, metadata map[string]string, r io.Reader) (ObjectInfo, error) {
	fail := func(err error) (ObjectInfo, error) {
		return ObjectInfo{}, fmt.Errorf("put object %s/%s: %w", o.bucket, name, err)
	}
	if name == "" {
		return fail(ErrInvalidOption)
	}
	old, err := o.getInfo(ctx, name, jetstream.GetObjectInfoShowDeleted())
	if err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		return fail(err)
	}
	info := &jetstream.ObjectInfo{
		ObjectMeta: jetstream.ObjectMeta{Name: name, Metadata: metadata, Opts: &jetstream.ObjectMetaOptions{ChunkSize: objectChunkSize}},
		Bucket:     o.bucket,
		NUID:       nuid.Next(),
	}
	chunks := fmt.Sprintf("$O.%s.C.%s", o.bucket, info.NUID)
	if err := o.putChunks(ctx, chunks, r, info); err != nil {
		o.purge(chunks)
		return fail(err)
	}
	if err := o.publishMeta(ctx, info); err != nil {
		o.purge(chunks)
		return fail(err)
	}
	if old != nil && !old.Deleted {
		o.purge(fmt.Sprintf("$O.%s.C.%s", o.bucket, old.NUID))
	}
	info.ModTime = time.Now().UTC()
	return objectInfoOf(info), nil
}

// publishMeta publishes info as the meta message of info.Name, replacing
// the one before it (a rollup), as jetstream does.
func (o *Objects) publishMeta(ctx context.Context, info *jetstream.ObjectInfo) error {
	m := nats.NewMsg(fmt.Sprintf("$O.%s.M.%s", o.bucket, base64.URLEncoding.EncodeToString([]byte(info.Name))))
	m.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	var err error
	if m.Data, err = json.Marshal(info); err != nil {
		return err
	}
	pctx, cancel := ackContext(ctx)
	defer cancel()
	_, err = o.js.PublishMsg(pctx, m)
	return err
}

// objectChunkSize is the size of an object's chunks (jetstream's default).
const objectChunkSize = 128 << 10

// ackContext bounds one wait for the server (a chunk's ack, the answer
// to one API request) to objectChunkWait, or ctx's deadline when sooner.
// A caller's deadline bounds the whole call, not each wait in it: an
// answer lost with a killed cluster node fails the call after
// objectChunkWait, never holds it for the rest of a long deadline (a
// training checkpoint's upload has 30 minutes, and its worker kept the
// job's message in progress all that while).
func ackContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, objectChunkWait)
}

// objectListWaits bounds a List (the creation of a watch of the store's
// meta messages, then one message per object) to this many
// objectChunkWait in all. One try at it that waits half an objectChunkWait
// for the watch to start or for its next object is given up and made
// again: a watch whose consumer was on a node killed meanwhile can stay
// silent for minutes, where a new one answers at once.
const objectListWaits = 4

// getInfo is the store's GetInfo bounded as one wait (ackContext).
func (o *Objects) getInfo(ctx context.Context, name string, opts ...jetstream.GetObjectInfoOpt) (*jetstream.ObjectInfo, error) {
	actx, cancel := ackContext(ctx)
	defer cancel()
	return o.os.GetInfo(actx, name, opts...)
}

// putChunks publishes what r reads as chunks on subject, keeping at most
// objectPutWindow bytes unacknowledged, and fills info's size, chunk count and
// digest.
func (o *Objects) putChunks(ctx context.Context, subject string, r io.Reader, info *jetstream.ObjectInfo) error {
	var inflight []jetstream.PubAckFuture
	wait := func(f jetstream.PubAckFuture) error {
		actx, cancel := ackContext(ctx)
		defer cancel()
		select {
		case <-f.Ok():
			return nil
		case err := <-f.Err():
			return err
		case <-actx.Done():
			return fmt.Errorf("chunk %d not acknowledged: %w", info.Chunks-uint32(len(inflight)), actx.Err())
		}
	}
	sum := sha256.New()
	buf := make([]byte, objectChunkSize)
	for {
		n, rerr := io.ReadFull(r, buf)
		if n > 0 {
			if len(inflight) == objectPutWindow/objectChunkSize {
				if err := wait(inflight[0]); err != nil {
					return err
				}
				inflight = inflight[1:]
			}
			sum.Write(buf[:n])
			// The client copies the data into its write buffer before
			// PublishMsgAsync returns, so buf is reused. No library
			// retry: it sends a chunk refused for no responders (a
			// stream electing a leader after a node's loss) again 250 ms
			// later, after the chunks sent since, and the object's bytes
			// are then stored out of order (TestClusterNodeLoss read a
			// part back with "object digest mismatch"). A refused chunk
			// fails the put, which its caller retries whole.
			f, err := o.js.PublishMsgAsync(&nats.Msg{Subject: subject, Data: buf[:n]}, noLibRetry)
			if err != nil {
				return err
			}
			inflight = append(inflight, f)
			info.Size += uint64(n)
			info.Chunks++
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return rerr
		}
	}
	for _, f := range inflight {
		if err := wait(f); err != nil {
			return err
		}
	}
	info.Digest = jetstream.GetObjectDigestValue(sum)
	return nil
}

// purge removes the chunks on subject (of a failed put, or of the object a
// put replaced), best effort as jetstream's Put does.
func (o *Objects) purge(subject string) {
	ctx, cancel := context.WithTimeout(context.Background(), objectChunkWait)
	defer cancel()
	if st, err := o.js.Stream(ctx, "OBJ_"+o.bucket); err == nil {
		_ = st.Purge(ctx, jetstream.WithPurgeSubject(subject))
	}
}

// Info describes name; a missing (or deleted) object wraps
// ErrObjectNotFound.
func (o *Objects) Info(ctx context.Context, name string) (ObjectInfo, error) {
	info, err := o.getInfo(ctx, name)
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
	in, err := o.getInfo(ctx, name)
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

// WriteTo writes the rest of the object to w chunk by chunk, with no copy
// through a caller's buffer (io.Copy uses it). It returns nil when the
// object is whole, an error wrapping ErrDigestMismatch when it is not.
func (r *ObjectReader) WriteTo(w io.Writer) (int64, error) {
	var n int64
	for r.err == nil {
		if len(r.buf) == 0 {
			if r.done {
				r.err = r.check()
				break
			}
			if r.err = r.next(); r.err != nil {
				break
			}
			continue
		}
		m, err := w.Write(r.buf)
		n += int64(m)
		r.buf = r.buf[m:]
		if err != nil {
			return n, err
		}
	}
	if r.err == io.EOF {
		return n, nil
	}
	return n, r.err
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
	dctx, cancel := ackContext(ctx)
	defer cancel()
	err := o.os.Delete(dctx, name)
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
	lctx, cancel := context.WithTimeout(ctx, objectListWaits*objectChunkWait)
	defer cancel()
	for {
		infos, err := o.listOnce(lctx, objectChunkWait/2)
		if errors.Is(err, errListStalled) && lctx.Err() == nil {
			continue
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
}

// errListStalled: a try at a List waited too long for its next object.
var errListStalled = errors.New("the watch of the store's objects went silent")

// listOnce lists the objects through a watch of the store's meta messages,
// giving up when the watch takes longer than stall to start or to deliver
// its next object.
func (o *Objects) listOnce(ctx context.Context, stall time.Duration) ([]*jetstream.ObjectInfo, error) {
	// The watch lives as long as its ctx: cancelled here at the end, or by
	// the timer when the watch has not started within stall.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	started := time.AfterFunc(stall, cancel)
	w, err := o.os.Watch(wctx, jetstream.IgnoreDeletes())
	if !started.Stop() {
		err = fmt.Errorf("%w: the watch took more than %v to start", errListStalled, stall)
	}
	if err != nil {
		if w != nil {
			stopWatch(w)
		}
		return nil, err
	}
	defer stopWatch(w)
	t := time.NewTimer(stall)
	defer t.Stop()
	var infos []*jetstream.ObjectInfo
	for {
		select {
		case in, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("%w: the watch ended after %d objects", errListStalled, len(infos))
			}
			if in == nil { // the objects there were when the watch began
				return infos, nil
			}
			infos = append(infos, in)
			t.Reset(stall)
		case <-t.C:
			return nil, fmt.Errorf("%w: %d objects after %v without the next", errListStalled, len(infos), stall)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// stopWatch stops a watch of the store and drains its channel, so that a
// delivery under way (nats.go sends each object into a channel of 32) ends:
// until the end of the subscription closes the channel, or it has been quiet
// for objectChunkWait (a watch stopped before nats.go set its closing).
func stopWatch(w jetstream.ObjectWatcher) {
	_ = w.Stop()
	go func() {
		quiet := time.NewTimer(objectChunkWait)
		defer quiet.Stop()
		for {
			select {
			case _, ok := <-w.Updates():
				if !ok {
					return
				}
				quiet.Reset(objectChunkWait)
			case <-quiet.C:
				return
			}
		}
	}()
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
