//go:build !linux

package resultsink

import (
	"errors"
	"os"
)

// openUnnamed is not available here: newAssembly names the spool's files
// and removes the names at once.
func openUnnamed(dir string) (*os.File, error) {
	return nil, &os.PathError{Op: "open unnamed", Path: dir, Err: errors.ErrUnsupported}
}
