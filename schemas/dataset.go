package schemas

import (
	"fmt"
	"regexp"
)

var datasetNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$`)

// ValidateDatasetName checks that name can be a NATS subject token and a
// storage key element: letters, digits, '-' and '_', starting with a letter
// or digit, at most 128 characters. Its errors wrap ErrInvalidDatasetName.
func ValidateDatasetName(name string) error {
	if !datasetNameRE.MatchString(name) {
		return fmt.Errorf("%w: %q (use letters, digits, '-' and '_', starting with a letter or digit)", ErrInvalidDatasetName, name)
	}
	return nil
}
