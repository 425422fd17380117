package dataset

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"

	"github.com/largeforge/largeforge/internal/atomicfile"
	"github.com/largeforge/largeforge/storage"
)

// Export writes dataset m from store into dir as the sink's local copy
// holds it: each part the manifest names (its bytes checked against the
// manifest's size and sha256), every rejects-NNNNN.jsonl, and last
// manifest.json, so a directory with a manifest is complete. Files are
// streamed, never held whole, and each is written atomically.
func Export(ctx context.Context, store storage.Store, m Manifest, dir string) error {
	if err := ValidateName(m.Name); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("export %s: %w", m.Name, err)
	}
	for _, p := range m.Parts {
		if path.Base(p.File) != p.File {
			return fmt.Errorf("export %s: %w: part %q", m.Name, ErrBadPart, p.File)
		}
		err := exportFile(ctx, store, storage.Dataset(m.Name)+p.File, filepath.Join(dir, p.File), func(size int64, sum string) error {
			if size != p.Bytes || sum != p.SHA256 {
				return fmt.Errorf("%w: %s is %d bytes with sha256 %s; the manifest says %d bytes, %s", ErrBadPart, p.File, size, sum, p.Bytes, p.SHA256)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("export %s: %w", m.Name, err)
		}
	}
	rejects, err := storage.DatasetRejectParts(store, m.Name)
	if err != nil {
		return err
	}
	list, err := rejects.List(ctx)
	if err != nil {
		return fmt.Errorf("export %s: %w", m.Name, err)
	}
	for _, in := range list {
		if err := exportFile(ctx, store, in.Key, filepath.Join(dir, path.Base(in.Key)), nil); err != nil {
			return fmt.Errorf("export %s: %w", m.Name, err)
		}
	}
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.WriteBytes(filepath.Join(dir, ManifestFile), append(data, '\n')); err != nil {
		return fmt.Errorf("export %s: %w", m.Name, err)
	}
	return nil
}

// exportFile copies key into the file dst; check, when set, judges the
// bytes (their size and sha256) before the file is put in place.
func exportFile(ctx context.Context, store storage.Store, key, dst string, check func(size int64, sum string) error) error {
	r, _, err := store.Open(ctx, key)
	if err != nil {
		return err
	}
	defer r.Close()
	return atomicfile.Write(dst, func(w io.Writer) error {
		h := sha256.New()
		n, err := io.Copy(io.MultiWriter(w, h), r)
		if err != nil {
			return fmt.Errorf("read %s: %w", key, err)
		}
		if check != nil {
			return check(n, hex.EncodeToString(h.Sum(nil)))
		}
		return nil
	})
}

// errEnough stops Rejects early.
var errEnough = errors.New("enough")

// Rejects calls each with every line of dataset name's rejects (its
// rejects-NNNNN.jsonl objects in order, on any machine); limit > 0 stops
// after that many lines.
func Rejects(ctx context.Context, store storage.Store, name string, limit int, each func(line []byte) error) error {
	rejects, err := storage.DatasetRejectParts(store, name)
	if err != nil {
		return err
	}
	list, err := rejects.List(ctx)
	if err != nil {
		return fmt.Errorf("rejects of %s: %w", name, err)
	}
	n := 0
	for _, in := range list {
		err := eachLine(ctx, store, in.Key, func(line []byte) error {
			if limit > 0 && n >= limit {
				return errEnough
			}
			n++
			return each(line)
		})
		if errors.Is(err, errEnough) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("rejects of %s: %w", name, err)
		}
	}
	return nil
}

// eachLine calls each with the lines of object key.
func eachLine(ctx context.Context, store storage.Store, key string, each func([]byte) error) error {
	r, _, err := store.Open(ctx, key)
	if err != nil {
		return err
	}
	defer r.Close()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<16), 64<<20)
	for sc.Scan() {
		if err := each(sc.Bytes()); err != nil {
			return err
		}
	}
	return sc.Err()
}
