package jobs

import (
	"errors"

	"github.com/largeforge/largeforge/schemas"
)

var (
	// ErrInvalidOption is wrapped by constructor and configuration errors.
	ErrInvalidOption = errors.New("invalid option")
	// ErrNotFound: no job with that id.
	ErrNotFound = errors.New("job not found")
	// ErrExists: a job with that id exists already.
	ErrExists = errors.New("job exists")
	// ErrIllegalTransition: the state machine does not allow the change.
	ErrIllegalTransition = errors.New("illegal job status transition")
	// ErrConflict: a compare-and-set update kept losing to other writers.
	ErrConflict = errors.New("job update conflict")
	// ErrBadMessage is wrapped when a job record cannot be decoded; it is
	// the sentinel of the job messages too (schemas.ErrBadMessage).
	ErrBadMessage = schemas.ErrBadMessage
)

var (
	// ErrUnknownID: a result names a custom_id its job never submitted.
	ErrUnknownID = errors.New("custom_id not submitted by the job")
	// ErrDuplicateResult: a result names a custom_id that already has one.
	ErrDuplicateResult = errors.New("custom_id already has a result")
)
