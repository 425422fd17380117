package storage

import "errors"

var (
	// ErrInvalidKey is returned for a key that is not a relative,
	// slash-separated name without empty, "." or ".." elements, or whose
	// kind (first element) has no place in the store.
	ErrInvalidKey = errors.New("storage: invalid key")
	// ErrExists is returned by Create when the key is taken.
	ErrExists = errors.New("storage: object exists")
	// ErrNotFound is returned for a key that holds no object; a Local
	// store's error also matches os.ErrNotExist.
	ErrNotFound = errors.New("storage: object not found")
	// ErrNoPath is returned by Path of a store whose objects are not files
	// of this machine.
	ErrNoPath = errors.New("storage: object has no local file")
	// ErrInvalidOption is wrapped by constructor errors.
	ErrInvalidOption = errors.New("storage: invalid option")
)
