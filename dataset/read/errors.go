package read

import "errors"

// ErrSource is returned when a source cannot be opened or read as a whole.
var ErrSource = errors.New("unreadable source")
