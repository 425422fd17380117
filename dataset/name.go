package dataset

import (
	"fmt"
	"regexp"
)

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$`)

// ValidateName checks that name can be a NATS subject token and a directory name:
// letters, digits, '-' and '_', starting with a letter or digit, at most 128 characters.
func ValidateName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("%w: %q (use letters, digits, '-' and '_', starting with a letter or digit)", ErrInvalidName, name)
	}
	return nil
}
