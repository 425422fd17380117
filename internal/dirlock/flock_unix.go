//go:build unix

package dirlock

import (
	"errors"
	"os"
	"syscall"
)

// errHeld is tryLock's error when another lock holds the file.
var errHeld = errors.New("held")

func tryLock(f *os.File) error {
	err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return errHeld
	}
	return err
}
