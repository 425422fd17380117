package pipeline

import (
	"errors"

	"github.com/largeforge/largeforge/schemas"
)

var (
	// ErrInvalidOption is wrapped by every configuration error (Validate, constructors).
	ErrInvalidOption = errors.New("invalid option")

	// ErrInvalid marks a message that can never be processed (bad input, poison).
	// A Handler returns an error wrapping it (see Invalid); the consume loop then
	// writes a dead-letter record and terminates the message instead of retrying.
	ErrInvalid = errors.New("invalid message")

	// ErrEmbeddedStart is wrapped when the embedded server cannot start.
	ErrEmbeddedStart = errors.New("embedded nats server did not start")

	// ErrListen is wrapped when the embedded server cannot listen on one of its
	// addresses (its clients', its cluster's route port, a leafnode's or a gateway's)
	// (most often: the port is already taken).
	ErrListen = errors.New("embedded nats server cannot listen")

	// ErrConnect is wrapped when a connection to NATS cannot be made.
	ErrConnect = errors.New("connect to nats")

	// ErrBadDLQRecord is wrapped by DecodeDLQRecord for bytes that are not a DLQ record.
	ErrBadDLQRecord = schemas.ErrBadDLQRecord

	// ErrKeyNotFound is wrapped by KV.Get when the key has no value.
	ErrKeyNotFound = errors.New("key not found")

	// ErrKeyExists is wrapped by KV.Create when the key has a value already.
	ErrKeyExists = errors.New("key exists")

	// ErrWrongRevision is wrapped by KV.Update when the key was written
	// since the revision it was given.
	ErrWrongRevision = errors.New("wrong revision")

	// ErrObjectNotFound is wrapped by Objects.Get, Info and Delete for a
	// name that holds no object.
	ErrObjectNotFound = errors.New("object not found")

	// ErrDigestMismatch is wrapped by an object read whose bytes do not
	// match the size and SHA-256 the store recorded: a truncated or tampered
	// object.
	ErrDigestMismatch = errors.New("object digest mismatch")

	// ErrWatchClosed is wrapped by Watcher.Next once the watcher has stopped.
	ErrWatchClosed = errors.New("watch closed")

	// ErrTopologyMissing is wrapped by CheckTopology when a stream, bucket
	// or object store is absent: the admin role applies the topology.
	ErrTopologyMissing = errors.New("topology missing")

	// ErrPublisherFailed is wrapped by Publisher.Publish and Publisher.Flush after
	// an asynchronous publish has failed; the Publisher stays failed.
	ErrPublisherFailed = errors.New("async publish failed")
)

// invalidError is an ErrInvalid with the reason that goes to the DLQ record and
// to TermWithReason.
type invalidError struct {
	reason string
	err    error
}

func (e *invalidError) Error() string {
	if e.err == nil {
		return e.reason
	}
	return e.reason + ": " + e.err.Error()
}

func (e *invalidError) Unwrap() []error {
	if e.err == nil {
		return []error{ErrInvalid}
	}
	return []error{ErrInvalid, e.err}
}

// Invalid returns an error wrapping ErrInvalid (and err, when not nil) that keeps
// reason: the consume loop writes reason into the DLQ record and passes it to
// TermWithReason.
func Invalid(reason string, err error) error {
	return &invalidError{reason: reason, err: err}
}

// InvalidReason returns the reason given to Invalid somewhere in err's chain, or
// err.Error() when there is none ("" for nil).
func InvalidReason(err error) string {
	if err == nil {
		return ""
	}
	var ie *invalidError
	if errors.As(err, &ie) {
		return ie.reason
	}
	return err.Error()
}
