package classifier

import "errors"

var (
	// ErrInvalidOption is wrapped by Config.Validate and Train errors.
	ErrInvalidOption = errors.New("invalid classifier option")
	// ErrInvalidRow is wrapped by ReadExamples for a labeled row that is
	// not {"prompt": "...", "expert": "..."}; the message names the line.
	ErrInvalidRow = errors.New("invalid labeled row")
	// ErrModelDir is wrapped by Load for a directory that is not a saved
	// router model (missing or inconsistent router.json or weights).
	ErrModelDir = errors.New("invalid router model directory")
	// ErrBackend is wrapped when the GoMLX backend fails (its panics are
	// turned into this error).
	ErrBackend = errors.New("classifier backend")
)
