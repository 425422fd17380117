// Package testenv finds the reference files that tests share with the project's
// steering repository (models, tokenizer vectors) and decides whether a test that
// needs them skips or fails when they are absent.
//
// LARGEFORGE_SHARED names the shared folder (default: ../shared beside the module
// root). When LARGEFORGE_REQUIRE_SHARED=1 (set by .ci/run) a missing file fails the
// test instead of skipping it.
package testenv

import (
	"os"
	"path/filepath"
	"testing"
)

// ModuleRoot returns the directory holding go.mod, walking up from the working directory.
func ModuleRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatalf("getwd: %v", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("no go.mod above the working directory")
		}
		dir = parent
	}
}

// SharedDir returns the shared reference folder.
func SharedDir(t testing.TB) string {
	t.Helper()
	if d := os.Getenv("LARGEFORGE_SHARED"); d != "" {
		abs, err := filepath.Abs(d)
		if err != nil {
			t.Fatalf("LARGEFORGE_SHARED: %v", err)
		}
		return abs
	}
	return filepath.Join(filepath.Dir(ModuleRoot(t)), "shared")
}

// SharedFile returns the path of rel inside the shared folder. When the file is
// absent the test is skipped with a message, or fails when LARGEFORGE_REQUIRE_SHARED=1.
func SharedFile(t testing.TB, rel string) string {
	t.Helper()
	p := filepath.Join(SharedDir(t), rel)
	if _, err := os.Stat(p); err != nil {
		if os.Getenv("LARGEFORGE_REQUIRE_SHARED") == "1" {
			t.Fatalf("shared reference file %s is required (LARGEFORGE_REQUIRE_SHARED=1): %v", p, err)
		}
		t.Skipf("shared reference file %s is absent (set LARGEFORGE_SHARED to its folder): %v", p, err)
	}
	return p
}
