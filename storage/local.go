package storage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/largeforge/largeforge/internal/atomicfile"
)

// Dirs are the directories of a Local store, one per kind of artifact; an
// empty one means the store holds no artifact of that kind.
type Dirs struct {
	Datasets string
	Jobs     string
	Models   string
	Train    string
}

// DirsUnder places every kind in root/<kind> (root is a --data-dir).
func DirsUnder(root string) Dirs {
	return Dirs{
		Datasets: filepath.Join(root, KindDatasets),
		Jobs:     filepath.Join(root, KindJobs),
		Models:   filepath.Join(root, KindModels),
		Train:    filepath.Join(root, KindTrain),
	}
}

// Local is a Store in directories of this machine: key <kind>/<rest> is the
// file <the kind's directory>/<rest>. Writes go through a synced temporary
// file (names starting with '.', which List skips) renamed or linked into
// place.
type Local struct {
	dirs map[string]string
}

var _ Store = (*Local)(nil)

// NewLocal returns the store of d; at least one directory must be set.
func NewLocal(d Dirs) (*Local, error) {
	dirs := map[string]string{}
	for kind, dir := range map[string]string{KindDatasets: d.Datasets, KindJobs: d.Jobs, KindModels: d.Models, KindTrain: d.Train} {
		if dir != "" {
			dirs[kind] = dir
		}
	}
	if len(dirs) == 0 {
		return nil, fmt.Errorf("%w: a local store needs a directory", ErrInvalidOption)
	}
	return &Local{dirs: dirs}, nil
}

// file is key's path.
func (l *Local) file(key string, prefix bool) (string, error) {
	parts, err := elements(key, prefix)
	if err != nil {
		return "", err
	}
	dir, ok := l.dirs[parts[0]]
	if !ok {
		return "", fmt.Errorf("%w: %q: no directory for %s", ErrInvalidKey, key, parts[0])
	}
	return filepath.Join(append([]string{dir}, parts[1:]...)...), nil
}

// Path is the file that holds key.
func (l *Local) Path(key string) (string, error) { return l.file(key, true) }

// Put writes key through a temporary file renamed over it.
func (l *Local) Put(_ context.Context, key string, write func(io.Writer) error) (Info, error) {
	return l.write(key, write, atomicfile.Write)
}

// Create writes key through a temporary file linked to it, which fails
// when the key's file exists: of two writers creating one key, one wins.
func (l *Local) Create(_ context.Context, key string, write func(io.Writer) error) (Info, error) {
	info, err := l.write(key, write, atomicfile.Create)
	if errors.Is(err, fs.ErrExist) {
		return Info{}, fmt.Errorf("%w: %s", ErrExists, key)
	}
	return info, err
}

func (l *Local) write(key string, write func(io.Writer) error, publish func(string, func(io.Writer) error) error) (Info, error) {
	p, err := l.file(key, false)
	if err != nil {
		return Info{}, err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return Info{}, fmt.Errorf("put %s: %w", key, err)
	}
	var info Info
	err = publish(p, func(w io.Writer) error {
		h := sha256.New()
		cw := &countWriter{w: io.MultiWriter(w, h)}
		if err := write(cw); err != nil {
			return err
		}
		info = Info{Key: key, Size: cw.n, SHA256: hex.EncodeToString(h.Sum(nil))}
		return nil
	})
	if err != nil {
		return Info{}, err
	}
	return info, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// Append appends data to key's file and syncs it.
func (l *Local) Append(_ context.Context, key string, data []byte) error {
	p, err := l.file(key, false)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("append %s: %w", key, err)
	}
	f, err := os.OpenFile(p, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("append %s: %w", key, err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("append %s: %w", key, err)
	}
	return nil
}

// Open opens key's file; a missing one matches ErrNotFound and os.ErrNotExist.
func (l *Local) Open(_ context.Context, key string) (Reader, Info, error) {
	p, err := l.file(key, false)
	if err != nil {
		return nil, Info{}, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, Info{}, fmt.Errorf("%w: %s: %w", ErrNotFound, key, err)
	}
	if err != nil {
		return nil, Info{}, fmt.Errorf("open %s: %w", key, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, Info{}, fmt.Errorf("open %s: %w", key, err)
	}
	return f, Info{Key: key, Size: st.Size()}, nil
}

// Stat describes key's file; a missing one (or not a file) is ErrNotFound.
func (l *Local) Stat(_ context.Context, key string) (Info, error) {
	p, err := l.file(key, false)
	if err != nil {
		return Info{}, err
	}
	st, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) || (err == nil && !st.Mode().IsRegular()) {
		return Info{}, fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	if err != nil {
		return Info{}, fmt.Errorf("stat %s: %w", key, err)
	}
	return Info{Key: key, Size: st.Size()}, nil
}

// List walks the directory of prefix; a missing one holds nothing.
func (l *Local) List(_ context.Context, prefix string) ([]Info, error) {
	dirKey := prefix
	if !strings.HasSuffix(prefix, "/") {
		dirKey = path.Dir(prefix)
	}
	root, err := l.file(dirKey, true)
	if err != nil {
		return nil, err
	}
	var out []Info
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) && p == root {
			return fs.SkipAll
		}
		if err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), ".") && p != root {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		key := strings.TrimSuffix(dirKey, "/") + "/" + filepath.ToSlash(rel)
		if !strings.HasPrefix(key, prefix) {
			return nil
		}
		st, err := d.Info()
		if err != nil {
			return err
		}
		out = append(out, Info{Key: key, Size: st.Size()})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", prefix, err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}
