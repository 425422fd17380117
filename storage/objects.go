package storage

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"

	"github.com/largeforge/largeforge/pipeline"
)

// Objects is a Store in a JetStream object store (lf_artifacts), reached
// through the bus from any machine: object names are the storage keys.
// Objects are streamed both ways, never held whole. A reader sees only
// objects whose upload completed (the object store writes an object's
// metadata after its last chunk), and every read checks the digest the
// store recorded.
//
// Object stores have no create-if-absent, so Create first claims the key
// in a KV bucket (lf_claims) with a KV create, which exactly one writer
// wins, and uploads after: a claim whose upload never finished (its writer
// died) is a key no object holds, which Parts skips as a gap in its
// numbering. Objects hold immutable bytes: there is no Append; a log is a
// series of created objects (rejects-NNNNN.jsonl). Open downloads to a
// temporary file (Parquet reads at random), removed on Close.
type Objects struct {
	obj    *pipeline.Objects
	claims *pipeline.KV
	tmp    string
}

var _ Store = (*Objects)(nil)

// NewObjects returns the store of obj, claiming created keys in claims.
// tmpDir holds the files of open objects ("" is the system's).
func NewObjects(obj *pipeline.Objects, claims *pipeline.KV, tmpDir string) (*Objects, error) {
	if obj == nil || claims == nil {
		return nil, fmt.Errorf("%w: an object store needs its objects and a claims bucket", ErrInvalidOption)
	}
	return &Objects{obj: obj, claims: claims, tmp: tmpDir}, nil
}

// OpenObjects opens the artifacts store of bus (lf_artifacts, claims in
// lf_claims).
func OpenObjects(ctx context.Context, bus *pipeline.Bus, tmpDir string) (*Objects, error) {
	obj, err := bus.Objects(ctx, pipeline.BucketArtifacts)
	if err != nil {
		return nil, err
	}
	claims, err := bus.KV(ctx, pipeline.BucketClaims)
	if err != nil {
		return nil, err
	}
	return NewObjects(obj, claims, tmpDir)
}

// Put streams what write produces into the object key, replacing it. A
// write that fails leaves no object (the store drops the chunks it got).
func (o *Objects) Put(ctx context.Context, key string, write func(io.Writer) error) (Info, error) {
	if _, err := elements(key, false); err != nil {
		return Info{}, err
	}
	pr, pw := io.Pipe()
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(pw, h)}
	done := make(chan error, 1)
	go func() {
		err := write(cw)
		pw.CloseWithError(err)
		done <- err
	}()
	_, err := o.obj.Put(ctx, key, pr)
	pr.CloseWithError(errors.New("object put ended")) // unblocks a write the put stopped reading
	werr := <-done
	if werr != nil {
		return Info{}, fmt.Errorf("put %s: %w", key, werr)
	}
	if err != nil {
		return Info{}, fmt.Errorf("put %s: %w", key, err)
	}
	return Info{Key: key, Size: cw.n, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

// Create claims key in the claims bucket, then uploads it; a key claimed
// before, by anyone, or holding an object, is ErrExists.
func (o *Objects) Create(ctx context.Context, key string, write func(io.Writer) error) (Info, error) {
	if _, err := elements(key, false); err != nil {
		return Info{}, err
	}
	if _, err := o.claims.Create(ctx, claimKey(key), []byte(key)); err != nil {
		if errors.Is(err, pipeline.ErrKeyExists) {
			return Info{}, fmt.Errorf("%w: %s", ErrExists, key)
		}
		return Info{}, fmt.Errorf("claim %s: %w", key, err)
	}
	// An object the claims do not know (put without a claim, or claims
	// lost) is never replaced.
	switch _, err := o.Stat(ctx, key); {
	case err == nil:
		return Info{}, fmt.Errorf("%w: %s (stored without a claim)", ErrExists, key)
	case !errors.Is(err, ErrNotFound):
		return Info{}, fmt.Errorf("create %s: %w", key, err)
	}
	return o.Put(ctx, key, write)
}

// kvKeyRE is what a KV key may hold.
var kvKeyRE = regexp.MustCompile(`^[-/_=.a-zA-Z0-9]+$`)

// claimKey is key's entry in the claims bucket: key itself when a KV key
// may hold it, else b64/ and its base64url.
func claimKey(key string) string {
	if kvKeyRE.MatchString(key) && !strings.HasPrefix(key, ".") && !strings.HasSuffix(key, ".") && !strings.HasPrefix(key, "b64/") {
		return key
	}
	return "b64/" + base64.RawURLEncoding.EncodeToString([]byte(key))
}

// Open downloads key to a temporary file, checking its digest, and opens
// it; Close removes the file. A missing object is ErrNotFound, a damaged
// one pipeline.ErrDigestMismatch.
func (o *Objects) Open(ctx context.Context, key string) (Reader, Info, error) {
	if _, err := elements(key, false); err != nil {
		return nil, Info{}, err
	}
	r, err := o.obj.Get(ctx, key)
	if errors.Is(err, pipeline.ErrObjectNotFound) {
		return nil, Info{}, fmt.Errorf("%w: %s: %w", ErrNotFound, key, err)
	}
	if err != nil {
		return nil, Info{}, fmt.Errorf("open %s: %w", key, err)
	}
	defer r.Close()
	f, err := os.CreateTemp(o.tmp, ".object-*")
	if err != nil {
		return nil, Info{}, fmt.Errorf("open %s: %w", key, err)
	}
	tf := &tempFile{File: f}
	n, err := io.Copy(f, r)
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		tf.Close()
		return nil, Info{}, fmt.Errorf("open %s: %w", key, err)
	}
	return tf, Info{Key: key, Size: n}, nil
}

// tempFile is a downloaded object, removed on Close.
type tempFile struct{ *os.File }

func (t *tempFile) Close() error {
	err := t.File.Close()
	if rerr := os.Remove(t.Name()); err == nil {
		err = rerr
	}
	return err
}

// List returns the objects whose keys start with prefix, sorted by key.
func (o *Objects) List(ctx context.Context, prefix string) ([]Info, error) {
	all, err := o.obj.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", prefix, err)
	}
	var out []Info
	for _, in := range all {
		if strings.HasPrefix(in.Name, prefix) {
			out = append(out, Info{Key: in.Name, Size: int64(in.Size)})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

// Stat describes key's object as the store's stream leader has it (see
// pipeline.Objects.LeaderInfo): an object whose upload was acknowledged is
// never missed. A missing object is ErrNotFound.
func (o *Objects) Stat(ctx context.Context, key string) (Info, error) {
	if _, err := elements(key, false); err != nil {
		return Info{}, err
	}
	in, err := o.obj.LeaderInfo(ctx, key)
	if errors.Is(err, pipeline.ErrObjectNotFound) {
		return Info{}, fmt.Errorf("%w: %s: %w", ErrNotFound, key, err)
	}
	if err != nil {
		return Info{}, fmt.Errorf("stat %s: %w", key, err)
	}
	return Info{Key: key, Size: int64(in.Size)}, nil
}

// Claimed reports whether Create ever claimed key (whether or not its
// upload finished), as the claims bucket's stream leader has it.
func (o *Objects) Claimed(ctx context.Context, key string) (bool, error) {
	ok, err := o.claims.LeaderHas(ctx, claimKey(key))
	if err != nil {
		return false, fmt.Errorf("claim of %s: %w", key, err)
	}
	return ok, nil
}

// objectsOf is the object store that s reads (s itself, a Mirror's
// primary, or what a wrapper's Unwrap returns), nil for another store.
func objectsOf(s Store) *Objects {
	switch s := s.(type) {
	case *Objects:
		return s
	case *Mirror:
		return objectsOf(s.primary)
	case interface{ Unwrap() Store }:
		return objectsOf(s.Unwrap())
	}
	return nil
}

// Path fails with ErrNoPath: objects are not files of this machine.
func (o *Objects) Path(key string) (string, error) {
	return "", fmt.Errorf("%w: %s is in object store %s", ErrNoPath, key, o.obj.Bucket())
}

// Mirror is a Store that writes both a primary store (the objects) and a
// local copy, and reads the primary: the embedded default keeps parts in
// lf_artifacts and mirrors them to <data-dir>/datasets for a person to
// open. Path is the local copy's.
type Mirror struct {
	primary Store
	local   *Local
}

var _ Store = (*Mirror)(nil)

// NewMirror returns the store writing primary and local, reading primary.
func NewMirror(primary Store, local *Local) (*Mirror, error) {
	if primary == nil || local == nil {
		return nil, fmt.Errorf("%w: a mirror needs a primary and a local store", ErrInvalidOption)
	}
	return &Mirror{primary: primary, local: local}, nil
}

// Put writes the primary, then the copy.
func (m *Mirror) Put(ctx context.Context, key string, write func(io.Writer) error) (Info, error) {
	return m.mirror(ctx, key, write, m.primary.Put)
}

// Create creates in the primary (ErrExists there is the answer), then
// writes the copy.
func (m *Mirror) Create(ctx context.Context, key string, write func(io.Writer) error) (Info, error) {
	return m.mirror(ctx, key, write, m.primary.Create)
}

// mirror runs write once: what it writes to the primary is copied to the
// local store as it goes (a Parquet part is encoded once, not twice). The
// copy is renamed into place only when the primary has stored the object;
// a failed copy does not fail the primary.
func (m *Mirror) mirror(ctx context.Context, key string, write func(io.Writer) error, primary func(context.Context, string, func(io.Writer) error) (Info, error)) (Info, error) {
	pr, pw := io.Pipe()
	copied := make(chan error, 1)
	go func() {
		_, err := m.local.Put(ctx, key, func(w io.Writer) error { _, err := io.Copy(w, pr); return err })
		pr.CloseWithError(fmt.Errorf("local copy: %w", err)) // a write to the copy no longer blocks
		copied <- err
	}()
	info, err := primary(ctx, key, func(w io.Writer) error { return write(io.MultiWriter(w, &lenient{w: pw})) })
	if err != nil {
		pw.CloseWithError(err)
		<-copied
		return Info{}, err
	}
	pw.Close()
	if err := <-copied; err != nil {
		return info, fmt.Errorf("mirror %s: %w", key, err)
	}
	return info, nil
}

// lenient writes to w until a write fails, then drops what follows: the
// local copy's failure is reported apart, never to the primary's writer.
type lenient struct {
	w   io.Writer
	err error
}

func (l *lenient) Write(p []byte) (int, error) {
	if l.err == nil {
		_, l.err = l.w.Write(p)
	}
	return len(p), nil
}

// Open reads the primary.
func (m *Mirror) Open(ctx context.Context, key string) (Reader, Info, error) {
	return m.primary.Open(ctx, key)
}

// List lists the primary.
func (m *Mirror) List(ctx context.Context, prefix string) ([]Info, error) {
	return m.primary.List(ctx, prefix)
}

// Stat reads the primary.
func (m *Mirror) Stat(ctx context.Context, key string) (Info, error) {
	return m.primary.Stat(ctx, key)
}

// Path is the local copy's file.
func (m *Mirror) Path(key string) (string, error) { return m.local.Path(key) }

// Local is the local copy, for files kept only here (a copy of what lives
// in a KV bucket, such as a dataset's manifest.json).
func (m *Mirror) Local() *Local { return m.local }
