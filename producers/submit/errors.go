package submit

import "errors"

var (
	// ErrInvalidOption is wrapped by configuration errors.
	ErrInvalidOption = errors.New("invalid submit option")
	// ErrUnreadable: the input file cannot be opened or read; the job fails.
	ErrUnreadable = errors.New("input file unreadable")
	// ErrCancelled: the job was cancelled while its file was being submitted.
	ErrCancelled = errors.New("job cancelled during submission")
)
