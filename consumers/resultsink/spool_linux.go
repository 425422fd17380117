package resultsink

import (
	"os"

	"golang.org/x/sys/unix"
)

// openUnnamed opens a file in dir that has no name from its first moment
// (O_TMPFILE): it lives as long as its descriptor and nothing is left of it
// when the process dies. It fails where the kernel or the filesystem cannot
// do this; newAssembly then names the files and removes the names.
func openUnnamed(dir string) (*os.File, error) {
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, &os.PathError{Op: "open O_TMPFILE", Path: dir, Err: err}
	}
	return os.NewFile(uintptr(fd), dir), nil
}
