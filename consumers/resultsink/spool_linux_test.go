package resultsink

import (
	"os"
	"testing"
	"time"
)

// On Linux the spool's files have no name from their first moment, so
// TestAssemblySpoolHasNoNames can look for names at any time: the fallback,
// which names them for an instant, must not be taken here.
func TestSpoolUnnamedOnLinux(t *testing.T) {
	dir := t.TempDir()
	f, err := openUnnamed(dir)
	if err != nil {
		t.Fatalf("O_TMPFILE refused in %s: %v", dir, err)
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
}
