package pipeline_test

import (
	"os"
	"testing"
)

var exampleDirs []string

// exampleDir makes a temporary data dir for Examples, which have no t.TempDir;
// TestMain removes it.
func exampleDir() string {
	d, err := os.MkdirTemp("", "pipeline-example-*")
	if err != nil {
		panic(err)
	}
	exampleDirs = append(exampleDirs, d)
	return d
}

func TestMain(m *testing.M) {
	code := m.Run()
	for _, d := range exampleDirs {
		os.RemoveAll(d)
	}
	os.Exit(code)
}
