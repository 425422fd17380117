package dirlock

import (
	"errors"
	"os"
	"testing"
)

func TestAcquire(t *testing.T) {
	dir := t.TempDir()
	first, err := Acquire(dir, "x.lock")
	if err != nil {
		t.Fatal(err)
	}
	// A second lock, even in this process, finds the directory held and
	// learns by whom.
	_, err = Acquire(dir, "x.lock")
	var le *LockedError
	if !errors.Is(err, ErrLocked) || !errors.As(err, &le) || le.PID != os.Getpid() || le.Dir != dir {
		t.Fatalf("second Acquire: %v, want a LockedError naming %s and pid %d", err, dir, os.Getpid())
	}
	if err := first.Release(); err != nil {
		t.Fatal(err)
	}
	again, err := Acquire(dir, "x.lock")
	if err != nil {
		t.Fatalf("Acquire after Release: %v", err)
	}
	defer again.Release()
	if _, err := Acquire(t.TempDir()+"/missing", "x.lock"); err == nil || errors.Is(err, ErrLocked) {
		t.Fatalf("Acquire in a missing directory: %v", err)
	}
}
