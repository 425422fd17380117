package resultsink

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// On Linux the spool's files have no name from their first moment, where
// the temporary directory's filesystem allows it (O_TMPFILE: ext4, xfs,
// tmpfs, btrfs; overlayfs from Linux 6.6): the fallback, which names them
// for an instant, is not taken there.
func TestSpoolUnnamedOnLinux(t *testing.T) {
	dir := t.TempDir()
	f, err := openUnnamed(dir)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EISDIR) {
		t.Skipf("the filesystem of %s cannot open files unnamed: %v", dir, err)
	}
	if err != nil {
		t.Fatalf("O_TMPFILE in %s: %v", dir, err)
	}
	defer f.Close()
	t.Setenv("TMPDIR", dir)
	a, err := newAssembly("job", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	defer a.drop()
	if _, err := a.files[1].WriteString("line\n"); err != nil {
		t.Fatal(err)
	}
	if left, err := os.ReadDir(dir); err != nil || len(left) > 0 {
		t.Errorf("temporary directory holds %v (%v); want nothing", left, err)
	}
	// The directory is empty after the fallback too (it removes its
	// names): the kernel's path of each descriptor tells them apart, a
	// removed name for the fallback's files, none for unnamed ones.
	for i, f := range a.files {
		p, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", f.Fd()))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(p, "largeforge-results-") {
			t.Errorf("spool file %d was opened by the named fallback: %s", i, p)
		}
	}
}
