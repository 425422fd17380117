// Package modelstore keeps model directories (Hugging Face checkpoints, PEFT
// adapters, quantized models) in the lf_models object store, versioned by
// digest, and brings them back to any machine verified.
//
// Layout, all inside lf_models (so a role that may read or write lf_models
// needs nothing else):
//
//	<name>/<digest>/<file>   the files of one version (<file> may hold '/')
//	<name>/<digest>.json     the version's Manifest: every file's path, size and SHA-256
//	<name>/current           the pointer: which digest <name> serves now
//	<name>/.push-<id>/<file> a file a push uploaded before it knew the digest
//
// The digest is the SHA-256 of the manifest's file list (paths, sizes,
// SHA-256s), so the same files always make the same version. Push uploads
// each file once to a staging object, hashing it as it goes, renames the
// staged objects to the version's keys (no chunk moves), stores the
// manifest, and moves the pointer last: a version whose push was
// interrupted is never current. Pull verifies every file against
// the manifest (and the object store's own digest) in a temporary directory
// and renames it into place only when all of them match. Remove drops the
// current version and points the name at the newest version that remains;
// removing the last version removes the name.
package modelstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/largeforge/largeforge/pipeline"
)

const (
	pointerFile    = "current"
	manifestSuffix = ".json"
	copyBuffer     = 1 << 20
)

// File is one file of a version.
type File struct {
	Path   string `json:"path"` // relative, '/'-separated
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"` // hex
}

// Manifest describes one version of a model.
type Manifest struct {
	Name    string    `json:"name"`
	Digest  string    `json:"digest"` // hex SHA-256 of the file list (see digestOf)
	Size    int64     `json:"size"`   // the files' bytes
	Created time.Time `json:"created"`
	Files   []File    `json:"files"`
}

// pointer is the object <name>/current.
type pointer struct {
	Digest  string    `json:"digest"`
	Updated time.Time `json:"updated"`
}

// Model is a name of List: its current version.
type Model struct {
	Name    string
	Digest  string
	Size    int64
	Files   int
	Updated time.Time // when the pointer last moved
}

// Version is a version of Versions.
type Version struct {
	Manifest
	Current bool
}

// Store is lf_models seen as models.
type Store struct {
	objs *pipeline.Objects
}

// New opens lf_models on bus (it must exist: see pipeline.EnsureTopology).
func New(ctx context.Context, bus *pipeline.Bus) (*Store, error) {
	if bus == nil {
		return nil, fmt.Errorf("%w: modelstore needs a bus", pipeline.ErrInvalidOption)
	}
	objs, err := bus.Objects(ctx, pipeline.BucketModels)
	if err != nil {
		return nil, err
	}
	return &Store{objs: objs}, nil
}

// ValidName checks a model name: a subject token (it names the subjects of
// the model's requests) without '/'.
func ValidName(name string) error {
	if err := pipeline.ValidToken(name); err != nil {
		return fmt.Errorf("%w %q: %w", ErrInvalidName, name, err)
	}
	if strings.ContainsAny(name, `/\`) {
		return fmt.Errorf("%w %q: no '/' allowed", ErrInvalidName, name)
	}
	return nil
}

// NameOf is the model name of an lf_models object that is a name's
// pointer, and false for every other object (files, manifests, the
// objects of a push in progress): the names List returns.
func NameOf(object string) (string, bool) {
	name, rest, ok := strings.Cut(object, "/")
	if !ok || rest != pointerFile || ValidName(name) != nil {
		return "", false
	}
	return name, true
}

func pointerKey(name string) string            { return name + "/" + pointerFile }
func manifestKey(name, digest string) string   { return name + "/" + digest + manifestSuffix }
func fileKey(name, digest, file string) string { return name + "/" + digest + "/" + file }

// digestOf is the version digest of a file list: the hex SHA-256 of one
// line "<sha256> <size> <path>\n" per file, in path order.
func digestOf(files []File) string {
	sorted := append([]File(nil), files...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Path < sorted[j].Path })
	h := sha256.New()
	for _, f := range sorted {
		fmt.Fprintf(h, "%s %d %s\n", f.SHA256, f.Size, f.Path)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// objectDigest is a hex SHA-256 in the object store's form.
func objectDigest(hexSum string) string {
	b, err := hex.DecodeString(hexSum)
	if err != nil {
		return ""
	}
	return "SHA-256=" + base64.URLEncoding.EncodeToString(b)
}

// validPath checks a manifest path: relative, '/'-separated, clean, no
// '..' element, no control character.
func validPath(p string) error {
	if p == "" || path.IsAbs(p) || strings.Contains(p, `\`) || path.Clean(p) != p || p == "." ||
		strings.IndexFunc(p, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0 {
		return fmt.Errorf("%w: file path %q", ErrInvalidName, p)
	}
	for _, el := range strings.Split(p, "/") {
		if el == ".." {
			return fmt.Errorf("%w: file path %q", ErrInvalidName, p)
		}
	}
	return nil
}

// parallel is how many files a push hashes or uploads, or a pull
// downloads, at once (each upload keeps up to 32 MiB awaiting the
// server's ack: see pipeline.Objects.PutWithMetadata).
const parallel = 2

// each calls fn for 0..n-1, parallel at a time, and returns the first
// error; after an error, the ctx fn is given is cancelled and no further
// call starts.
func each(ctx context.Context, n int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(parallel, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := fn(ctx, i); err != nil {
					cancel(err)
				}
			}
		}()
	}
feed:
	for i := range n {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err := context.Cause(ctx); err != nil && ctx.Err() != nil {
		return err
	}
	return nil
}

// point makes digest the current version of name.
func (s *Store) point(ctx context.Context, name, digest string) error {
	data, err := json.Marshal(pointer{Digest: digest, Updated: time.Now().UTC()})
	if err != nil {
		return err
	}
	if _, err := s.objs.Put(ctx, pointerKey(name), bytes.NewReader(data)); err != nil {
		return fmt.Errorf("model %s: move pointer to %s: %w", name, digest, err)
	}
	return nil
}

// readSmall reads a small object (a pointer, a manifest) whole.
func (s *Store) readSmall(ctx context.Context, key string) ([]byte, error) {
	r, err := s.objs.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	if r.Info().Size > 64<<20 {
		return nil, fmt.Errorf("object %s: %d bytes: %w", key, r.Info().Size, ErrCorrupt)
	}
	data, err := io.ReadAll(r)
	if errors.Is(err, pipeline.ErrDigestMismatch) {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return data, err
}

// Resolve is the digest name serves now; an unknown name wraps ErrNotFound.
func (s *Store) Resolve(ctx context.Context, name string) (string, error) {
	p, err := s.pointer(ctx, name)
	return p.Digest, err
}

func (s *Store) pointer(ctx context.Context, name string) (pointer, error) {
	if err := ValidName(name); err != nil {
		return pointer{}, err
	}
	data, err := s.readSmall(ctx, pointerKey(name))
	if errors.Is(err, pipeline.ErrObjectNotFound) {
		return pointer{}, fmt.Errorf("model %s: %w (push it with `largeforge model push %s DIR`)", name, ErrNotFound, name)
	}
	if err != nil {
		return pointer{}, fmt.Errorf("model %s: %w", name, err)
	}
	var p pointer
	if err := json.Unmarshal(data, &p); err != nil || len(p.Digest) != sha256.Size*2 {
		return pointer{}, fmt.Errorf("model %s: pointer %q: %w", name, data, ErrCorrupt)
	}
	return p, nil
}

// Manifest reads and checks the manifest of name's version digest: a
// missing one wraps ErrNoManifest, one that does not match its digest or
// names a bad path ErrCorrupt.
func (s *Store) Manifest(ctx context.Context, name, digest string) (Manifest, error) {
	data, err := s.readSmall(ctx, manifestKey(name, digest))
	if errors.Is(err, pipeline.ErrObjectNotFound) {
		return Manifest{}, fmt.Errorf("model %s version %s: %w", name, digest, ErrNoManifest)
	}
	if err != nil {
		return Manifest{}, fmt.Errorf("model %s version %s: manifest: %w", name, digest, err)
	}
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return Manifest{}, fmt.Errorf("model %s version %s: manifest: %w: %w", name, digest, ErrCorrupt, err)
	}
	if m.Digest != digest || digestOf(m.Files) != digest {
		return Manifest{}, fmt.Errorf("model %s version %s: the manifest does not match its digest: %w", name, digest, ErrCorrupt)
	}
	for _, f := range m.Files {
		if err := validPath(f.Path); err != nil {
			return Manifest{}, fmt.Errorf("model %s version %s: %w: %w", name, digest, ErrCorrupt, err)
		}
	}
	return m, nil
}

// Pull writes the current version of name into dir (which must not exist,
// or be empty) and returns its digest. Every file is streamed into a
// temporary directory beside dir and checked against the manifest; dir
// appears, whole, only when all of them match. An unknown name wraps
// ErrNotFound, a missing manifest ErrNoManifest, a truncated or tampered
// file ErrCorrupt; then dir is left as it was.
func (s *Store) Pull(ctx context.Context, name, dir string) (string, error) {
	digest, err := s.Resolve(ctx, name)
	if err != nil {
		return "", err
	}
	if st, err := os.Stat(dir); err == nil {
		entries, rerr := os.ReadDir(dir)
		if !st.IsDir() || rerr != nil || len(entries) > 0 {
			return "", fmt.Errorf("pull %s into %s: %w", name, dir, ErrDestination)
		}
	}
	return digest, s.pullVersion(ctx, name, digest, dir)
}

// Fetch makes cache/<name>/<digest> hold the current version of name and
// returns that directory and the digest (see FetchVersion).
func (s *Store) Fetch(ctx context.Context, name, cache string) (string, string, error) {
	if cache == "" {
		return "", "", fmt.Errorf("%w: fetch %s: no model cache directory", pipeline.ErrInvalidOption, name)
	}
	digest, err := s.Resolve(ctx, name)
	if err != nil {
		return "", "", err
	}
	dir, err := s.FetchVersion(ctx, name, digest, cache)
	return dir, digest, err
}

// FetchVersion makes cache/<name>/<digest> hold the version digest of name,
// whichever version is current, and returns that directory. A version
// already there is used as it is (it was verified when it was renamed into
// place); a new push makes a new directory, so the files under a running
// model never change. A digest that is not one (64 hex digits) or names
// no version of name wraps ErrNotFound (no manifest: ErrNoManifest).
func (s *Store) FetchVersion(ctx context.Context, name, digest, cache string) (string, error) {
	if cache == "" {
		return "", fmt.Errorf("%w: fetch %s: no model cache directory", pipeline.ErrInvalidOption, name)
	}
	if err := ValidName(name); err != nil {
		return "", err
	}
	if !validDigest(digest) {
		return "", fmt.Errorf("model %s version %q: not a digest: %w", name, digest, ErrNotFound)
	}
	dir := filepath.Join(cache, name, digest)
	if st, err := os.Stat(dir); err == nil && st.IsDir() {
		return dir, nil
	}
	if err := s.pullVersion(ctx, name, digest, dir); err != nil {
		if st, serr := os.Stat(dir); serr == nil && st.IsDir() {
			return dir, nil // another fetch put it there first
		}
		return "", err
	}
	return dir, nil
}

// validDigest reports whether d is a version digest: a hex SHA-256.
func validDigest(d string) bool {
	if len(d) != 2*sha256.Size {
		return false
	}
	_, err := hex.DecodeString(d)
	return err == nil && strings.ToLower(d) == d
}

func (s *Store) pullVersion(ctx context.Context, name, digest, dir string) error {
	m, err := s.Manifest(ctx, name, digest)
	if err != nil {
		return err
	}
	parent := filepath.Dir(filepath.Clean(dir))
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fmt.Errorf("pull %s: %w", name, err)
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(dir)+".pull-*")
	if err != nil {
		return fmt.Errorf("pull %s: %w", name, err)
	}
	defer os.RemoveAll(tmp) // nothing is left behind unless renamed
	err = each(ctx, len(m.Files), func(ctx context.Context, i int) error { return s.getFile(ctx, m, m.Files[i], tmp) })
	if err != nil {
		return err
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	if st, err := os.Stat(dir); err == nil && st.IsDir() {
		_ = os.Remove(dir) // empty (Pull checked), or another fetch's: then Rename fails
	}
	if err := os.Rename(tmp, dir); err != nil {
		return fmt.Errorf("pull %s: %w", name, err)
	}
	return nil
}

// getFile streams one file of m into root, checking the object's recorded
// size and digest first and the bytes read at the end.
func (s *Store) getFile(ctx context.Context, m Manifest, f File, root string) error {
	key := fileKey(m.Name, m.Digest, f.Path)
	corrupt := func(what string, args ...any) error {
		return fmt.Errorf("pull %s: %s: %s: %w", m.Name, f.Path, fmt.Sprintf(what, args...), ErrCorrupt)
	}
	r, err := s.objs.Get(ctx, key)
	if errors.Is(err, pipeline.ErrObjectNotFound) {
		return corrupt("object %s missing", key)
	}
	if err != nil {
		return fmt.Errorf("pull %s: %s: %w", m.Name, f.Path, err)
	}
	defer r.Close()
	if info := r.Info(); info.Size != uint64(f.Size) || info.Digest != objectDigest(f.SHA256) {
		return corrupt("stored object is %d bytes %s, the manifest says %d bytes %s", info.Size, info.Digest, f.Size, objectDigest(f.SHA256))
	}
	p := filepath.Join(root, filepath.FromSlash(f.Path))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	out, err := os.Create(p)
	if err != nil {
		return fmt.Errorf("pull %s: %w", m.Name, err)
	}
	// The reader writes each chunk straight to the file and ends without
	// error only when the bytes match the object's recorded size and
	// SHA-256, which are the manifest's (checked above): no second hash.
	n, err := io.Copy(out, r)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if errors.Is(err, pipeline.ErrDigestMismatch) {
		return corrupt("%v", err)
	}
	if err != nil {
		return fmt.Errorf("pull %s: %s: %w", m.Name, f.Path, err)
	}
	if n != f.Size {
		return corrupt("read %d bytes, the manifest says %d", n, f.Size)
	}
	// The file gets the modification time it was pushed with, so a push
	// of the pulled directory knows it holds this version (see Push).
	if ns, err := strconv.ParseInt(r.Info().Metadata[mtimeKey], 10, 64); err == nil {
		_ = os.Chtimes(p, time.Time{}, time.Unix(0, ns))
	}
	return nil
}

// List describes every name with a current version, by name.
func (s *Store) List(ctx context.Context) ([]Model, error) {
	infos, err := s.objs.List(ctx)
	if err != nil {
		return nil, err
	}
	var out []Model
	for _, in := range infos {
		name, ok := NameOf(in.Name)
		if !ok {
			continue
		}
		p, err := s.pointer(ctx, name)
		if errors.Is(err, ErrNotFound) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, err
		}
		m, err := s.Manifest(ctx, name, p.Digest)
		if err != nil {
			return nil, err
		}
		out = append(out, Model{Name: name, Digest: p.Digest, Size: m.Size, Files: len(m.Files), Updated: p.Updated})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Versions lists the stored versions of name, oldest first, marking the
// current one; an unknown name wraps ErrNotFound.
func (s *Store) Versions(ctx context.Context, name string) ([]Version, error) {
	current, err := s.Resolve(ctx, name)
	if err != nil {
		return nil, err
	}
	ms, err := s.manifests(ctx, name)
	if err != nil {
		return nil, err
	}
	out := make([]Version, len(ms))
	for i, m := range ms {
		out[i] = Version{Manifest: m, Current: m.Digest == current}
	}
	return out, nil
}

// manifests reads the manifests of name's versions, oldest first.
func (s *Store) manifests(ctx context.Context, name string) ([]Manifest, error) {
	infos, err := s.objs.List(ctx)
	if err != nil {
		return nil, err
	}
	var out []Manifest
	for _, in := range infos {
		rest, ok := strings.CutPrefix(in.Name, name+"/")
		digest, isManifest := strings.CutSuffix(rest, manifestSuffix)
		if !ok || !isManifest || strings.Contains(digest, "/") {
			continue
		}
		m, err := s.Manifest(ctx, name, digest)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}

// Remove removes the current version of name: the pointer moves to the
// newest version that remains, then the removed version's objects are
// deleted; with no version left the name goes (its pointer first, then
// every object under it, those of interrupted pushes included). It returns
// the removed digest and the new current one ("" when the name is gone).
func (s *Store) Remove(ctx context.Context, name string) (removed, current string, err error) {
	removed, err = s.Resolve(ctx, name)
	if err != nil {
		return "", "", err
	}
	ms, err := s.manifests(ctx, name)
	if err != nil {
		return "", "", err
	}
	for _, m := range ms {
		if m.Digest != removed {
			current = m.Digest // the newest other
		}
	}
	prefix := name + "/" + removed
	if current != "" {
		if err := s.point(ctx, name, current); err != nil {
			return "", "", err
		}
	} else {
		if err := s.objs.Delete(ctx, pointerKey(name)); err != nil && !errors.Is(err, pipeline.ErrObjectNotFound) {
			return "", "", fmt.Errorf("remove %s: %w", name, err)
		}
		prefix = name + "/"
	}
	infos, err := s.objs.List(ctx)
	if err != nil {
		return "", "", err
	}
	for _, in := range infos {
		if !strings.HasPrefix(in.Name, prefix) {
			continue
		}
		if err := s.objs.Delete(ctx, in.Name); err != nil && !errors.Is(err, pipeline.ErrObjectNotFound) {
			return "", "", fmt.Errorf("remove %s: %w", name, err)
		}
	}
	return removed, current, nil
}
