package modelstore

import "errors"

var (
	// ErrInvalidName is wrapped when a model name is not a subject token
	// (no '.', '*', '>', spaces) or holds a '/', or a path in a model
	// directory cannot be stored (a '..' element, a newline).
	ErrInvalidName = errors.New("invalid model name")

	// ErrNotFound is wrapped when lf_models holds no model of that name
	// (or no version of that digest).
	ErrNotFound = errors.New("model not in lf_models")

	// ErrNoManifest is wrapped when a name points at a version whose
	// manifest is missing or unreadable.
	ErrNoManifest = errors.New("model manifest missing")

	// ErrCorrupt is wrapped when a stored file does not match the size and
	// SHA-256 of its manifest (truncated or tampered), or a manifest does
	// not match its digest. Nothing is written in place of the model then.
	ErrCorrupt = errors.New("model object corrupt")

	// ErrEmpty is wrapped when Push finds no regular file in the directory.
	ErrEmpty = errors.New("no model files")

	// ErrChanged is wrapped when a file changes while it is pushed.
	ErrChanged = errors.New("model file changed during push")

	// ErrDestination is wrapped when Pull's directory exists and is not
	// empty.
	ErrDestination = errors.New("pull destination not empty")
)
