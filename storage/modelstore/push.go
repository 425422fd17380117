package modelstore

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/largeforge/largeforge/pipeline"
)

const (
	// stagePrefix starts the second element of the objects a push uploads
	// before it knows the version's digest: <name>/.push-<id>/<file>. A
	// version's files are renamed from there (no chunk moves); those of
	// an interrupted push stay until a push of the same files reuses them
	// or the name is removed.
	stagePrefix = ".push-"
	// mtimeKey is the metadata of a file object: the modification time
	// of the file pushed, Unix nanoseconds. With the size it tells a later
	// push which files it need not upload (always confirmed by SHA-256).
	mtimeKey = "mtime"
)

// localFile is a file of a directory being pushed: its manifest entry
// (SHA256 empty until hashed or uploaded), where it is and when it was
// modified.
type localFile struct {
	File
	abs   string
	mtime string // as in mtimeKey
}

func mtimeOf(st fs.FileInfo) string { return strconv.FormatInt(st.ModTime().UnixNano(), 10) }

// listFiles lists the regular files under dir (symbolic links to regular
// files included, hidden names skipped) by path, with their sizes and
// modification times; nothing is read.
func listFiles(dir string) ([]localFile, error) {
	var files []localFile
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != dir && strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			return nil
		}
		st, err := os.Stat(p) // follows a link
		if err != nil || !st.Mode().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if err := validPath(rel); err != nil {
			return err
		}
		files = append(files, localFile{File: File{Path: rel, Size: st.Size()}, abs: p, mtime: mtimeOf(st)})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read model directory %s: %w", dir, err)
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Path < files[j].Path })
	return files, nil
}

// hash sets f.SHA256, reading the file; a size other than the listed one
// wraps ErrChanged.
func (f *localFile) hash() error {
	sum, n, err := hashFile(f.abs)
	if err != nil {
		return fmt.Errorf("read model file %s: %w", f.abs, err)
	}
	if n != f.Size {
		return fmt.Errorf("%s: %w", f.abs, ErrChanged)
	}
	f.SHA256 = sum
	return nil
}

func hashFile(p string) (string, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.CopyBuffer(h, f, make([]byte, copyBuffer))
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// manifestOf is the manifest of files (all hashed) as a version of name.
func manifestOf(name string, files []localFile) Manifest {
	m := Manifest{Name: name, Created: time.Now().UTC(), Files: make([]File, len(files))}
	for i, f := range files {
		m.Files[i] = f.File
		m.Size += f.Size
	}
	m.Digest = digestOf(m.Files)
	return m
}

// Push stores the files of dir (every regular file, subdirectories
// included, hidden names skipped) as a new version of name and makes it
// current. Files are streamed, never held whole. The same files pushed
// again make the same version: only the pointer moves. The pointer moves
// last, so an interrupted push leaves the name as it was.
//
// Files are read once: each is uploaded to a staging object while the
// object store hashes it, and renamed to <name>/<digest>/<file> once every
// file's SHA-256, and so the version's digest, is known. Only when a
// stored version holds the same paths with the same sizes and modification
// times are the files hashed first, so that pushing them again uploads
// nothing. Files an interrupted push staged are reused when they still
// match (size, modification time, SHA-256), and a file rewritten while it
// is uploaded wraps ErrChanged.
func (s *Store) Push(ctx context.Context, name, dir string) (Manifest, error) {
	if err := ValidName(name); err != nil {
		return Manifest{}, err
	}
	files, err := listFiles(dir)
	if err != nil {
		return Manifest{}, err
	}
	if len(files) == 0 {
		return Manifest{}, fmt.Errorf("push %s: %w in %s", name, ErrEmpty, dir)
	}
	infos, err := s.objs.List(ctx)
	if err != nil {
		return Manifest{}, fmt.Errorf("push %s: %w", name, err)
	}
	if !storedAlike(name, files, infos) {
		return s.pushStaged(ctx, name, files, infos)
	}
	if err := each(ctx, len(files), func(_ context.Context, i int) error { return files[i].hash() }); err != nil {
		return Manifest{}, fmt.Errorf("push %s: %w", name, err)
	}
	m := manifestOf(name, files)
	if old, err := s.Manifest(ctx, name, m.Digest); err == nil {
		return old, s.point(ctx, name, old.Digest) // the version is stored already
	} else if !errors.Is(err, ErrNoManifest) {
		return Manifest{}, err
	}
	if err := each(ctx, len(files), func(ctx context.Context, i int) error { return s.putFile(ctx, m, files[i]) }); err != nil {
		return Manifest{}, err
	}
	return m, s.commit(ctx, m)
}

// storedAlike reports whether a stored version of name holds exactly the
// paths of files with their sizes and modification times.
func storedAlike(name string, files []localFile, infos []pipeline.ObjectInfo) bool {
	want := make(map[string]localFile, len(files))
	for _, f := range files {
		want[f.Path] = f
	}
	alike, other, manifests := map[string]int{}, map[string]int{}, map[string]bool{}
	for _, in := range infos {
		rest, ok := strings.CutPrefix(in.Name, name+"/")
		if d, isManifest := strings.CutSuffix(rest, manifestSuffix); ok && isManifest && validDigest(d) {
			manifests[d] = true
			continue
		}
		digest, p, isFile := strings.Cut(rest, "/")
		if !ok || !isFile || !validDigest(digest) {
			continue
		}
		if f, ok := want[p]; ok && in.Size == uint64(f.Size) && in.Metadata[mtimeKey] == f.mtime {
			alike[digest]++
		} else {
			other[digest]++
		}
	}
	for d, n := range alike {
		if n == len(files) && other[d] == 0 && manifests[d] {
			return true
		}
	}
	return false
}

// putFile uploads one hashed file of m to its key, unless an object with
// its size and digest is there already (a push resumed), and checks that
// what was stored is what was hashed.
func (s *Store) putFile(ctx context.Context, m Manifest, f localFile) error {
	key, want := fileKey(m.Name, m.Digest, f.Path), objectDigest(f.SHA256)
	if info, err := s.objs.Info(ctx, key); err == nil && info.Size == uint64(f.Size) && info.Digest == want {
		return nil
	}
	info, err := s.upload(ctx, m.Name, key, f)
	if err != nil {
		return err
	}
	if info.Size != uint64(f.Size) || info.Digest != want {
		_ = s.objs.Delete(context.WithoutCancel(ctx), key)
		return fmt.Errorf("push %s: %s: %w", m.Name, f.Path, ErrChanged)
	}
	return nil
}

// upload stores the file f under key with its modification time.
func (s *Store) upload(ctx context.Context, name, key string, f localFile) (pipeline.ObjectInfo, error) {
	r, err := os.Open(f.abs)
	if err != nil {
		return pipeline.ObjectInfo{}, fmt.Errorf("push %s: %w", name, err)
	}
	defer r.Close()
	info, err := s.objs.PutWithMetadata(ctx, key, map[string]string{mtimeKey: f.mtime}, r)
	if err != nil {
		return pipeline.ObjectInfo{}, fmt.Errorf("push %s: %s: %w", name, f.Path, err)
	}
	return info, nil
}

// pushStaged pushes files read once: staged (uploaded, or reused from an
// interrupted push), then renamed into the version their SHA-256s make.
func (s *Store) pushStaged(ctx context.Context, name string, files []localFile, infos []pipeline.ObjectInfo) (Manifest, error) {
	stage, err := stageOf(name)
	if err != nil {
		return Manifest{}, err
	}
	left := leftovers(name, infos)
	keys := make([]string, len(files))
	err = each(ctx, len(files), func(ctx context.Context, i int) error {
		var err error
		keys[i], err = s.stageFile(ctx, name, stage, &files[i], left[files[i].Path])
		return err
	})
	if err != nil {
		return Manifest{}, err // what was staged stays, for the next push to reuse
	}
	m := manifestOf(name, files)
	if old, err := s.Manifest(ctx, name, m.Digest); err == nil {
		for _, k := range keys {
			_ = s.objs.Delete(ctx, k) // best effort: the version has its own
		}
		return old, s.point(ctx, name, old.Digest)
	} else if !errors.Is(err, ErrNoManifest) {
		return Manifest{}, err
	}
	err = each(ctx, len(files), func(ctx context.Context, i int) error {
		return s.place(ctx, name, keys[i], fileKey(name, m.Digest, files[i].Path), files[i].File)
	})
	if err != nil {
		return Manifest{}, err
	}
	return m, s.commit(ctx, m)
}

// stageOf is a fresh staging prefix of name.
func stageOf(name string) (string, error) {
	id := make([]byte, 8)
	if _, err := rand.Read(id); err != nil {
		return "", fmt.Errorf("push %s: %w", name, err)
	}
	return name + "/" + stagePrefix + hex.EncodeToString(id), nil
}

// leftovers are the staged objects of name's earlier pushes, by file path.
func leftovers(name string, infos []pipeline.ObjectInfo) map[string][]pipeline.ObjectInfo {
	out := map[string][]pipeline.ObjectInfo{}
	for _, in := range infos {
		rest, ok := strings.CutPrefix(in.Name, name+"/"+stagePrefix)
		if _, p, isFile := strings.Cut(rest, "/"); ok && isFile {
			out[p] = append(out[p], in)
		}
	}
	return out
}

// stageFile sets f.SHA256 and returns the staged object holding f: a
// leftover with its size, modification time and SHA-256 (hashing f to
// check), or f uploaded under stage. A file whose size or modification
// time is not the listed one after the upload wraps ErrChanged.
func (s *Store) stageFile(ctx context.Context, name, stage string, f *localFile, left []pipeline.ObjectInfo) (string, error) {
	for _, in := range left {
		if in.Size != uint64(f.Size) || in.Metadata[mtimeKey] != f.mtime {
			continue
		}
		if f.SHA256 == "" {
			if err := f.hash(); err != nil {
				return "", fmt.Errorf("push %s: %w", name, err)
			}
		}
		if in.Digest == objectDigest(f.SHA256) {
			return in.Name, nil
		}
	}
	key := stage + "/" + f.Path
	info, err := s.upload(ctx, name, key, *f)
	if err != nil {
		return "", err
	}
	sum, ok := hexDigest(info.Digest)
	st, serr := os.Stat(f.abs)
	if !ok || serr != nil || info.Size != uint64(f.Size) || st.Size() != f.Size || mtimeOf(st) != f.mtime || (f.SHA256 != "" && f.SHA256 != sum) {
		_ = s.objs.Delete(context.WithoutCancel(ctx), key)
		return "", fmt.Errorf("push %s: %s: %w", name, f.Path, ErrChanged)
	}
	f.SHA256 = sum
	return key, nil
}

// place renames the staged object from to the file object to of f, unless
// to holds f already (a resumed push of the old layout, or another push
// of the same files), when from is dropped.
func (s *Store) place(ctx context.Context, name, from, to string, f File) error {
	want := objectDigest(f.SHA256)
	stored := func() bool {
		in, err := s.objs.Info(ctx, to)
		return err == nil && in.Size == uint64(f.Size) && in.Digest == want
	}
	if stored() {
		_ = s.objs.Delete(ctx, from) // best effort; another push may have taken it
		return nil
	}
	info, err := s.objs.Rename(ctx, from, to)
	if errors.Is(err, pipeline.ErrObjectNotFound) && stored() {
		return nil // another push of the same files renamed it first
	}
	if err != nil {
		return fmt.Errorf("push %s: %s: %w", name, f.Path, err)
	}
	if info.Size != uint64(f.Size) || info.Digest != want {
		return fmt.Errorf("push %s: %s: staged object %s is %d bytes %s, want %d bytes %s: %w",
			name, f.Path, from, info.Size, info.Digest, f.Size, want, ErrChanged)
	}
	return nil
}

// commit stores m's manifest, then makes it current.
func (s *Store) commit(ctx context.Context, m Manifest) error {
	data, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if _, err := s.objs.Put(ctx, manifestKey(m.Name, m.Digest), strings.NewReader(string(data))); err != nil {
		return fmt.Errorf("push %s: manifest: %w", m.Name, err)
	}
	return s.point(ctx, m.Name, m.Digest)
}

// hexDigest is the hex SHA-256 of an object digest ("SHA-256=" and
// base64url), false if it is not one.
func hexDigest(objDigest string) (string, bool) {
	b64, ok := strings.CutPrefix(objDigest, "SHA-256=")
	if !ok {
		return "", false
	}
	b, err := base64.URLEncoding.DecodeString(b64)
	if err != nil || len(b) != sha256.Size {
		return "", false
	}
	return hex.EncodeToString(b), true
}
