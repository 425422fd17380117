// Package atomicfile writes files so that no reader ever sees a partial one: the
// content goes to a temporary file beside the target, is synced, and is renamed
// over the target (Write) or linked to it when it does not exist yet (Create);
// the directory is then synced so the new name survives a crash.
package atomicfile

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Write creates path with the bytes that write produces, atomically. The file
// is readable by all (0644).
func Write(path string, write func(w io.Writer) error) error {
	return publish(path, write, os.Rename)
}

// Create is Write for a path that must not exist yet: when it does (another
// writer took it first, even at the same moment) the error wraps
// os.ErrExist and the file is left as it was.
func Create(path string, write func(w io.Writer) error) error {
	return publish(path, write, os.Link)
}

// publish writes a synced temporary file beside path and gives it path's name
// with name (a rename, or a link that fails when path exists).
func publish(path string, write func(w io.Writer) error, name func(oldpath, newpath string) error) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // after a rename, a no-op
	bw := bufio.NewWriterSize(tmp, 256<<10)
	err = write(bw)
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = tmp.Chmod(0o644)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = name(tmp.Name(), path)
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// WriteBytes creates path holding data, atomically.
func WriteBytes(path string, data []byte) error {
	return Write(path, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
