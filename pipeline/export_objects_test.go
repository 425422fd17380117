package pipeline

import "time"

// SetObjectWait sets how long one wait of an object store call for the
// server lasts (objectChunkWait) and returns the restore.
func SetObjectWait(d time.Duration) (restore func()) {
	old := objectChunkWait
	objectChunkWait = d
	return func() { objectChunkWait = old }
}

// SetKVRequestWait sets how long one KV request waits for its answer
// (kvRequestWait) and returns the restore.
func SetKVRequestWait(d time.Duration) (restore func()) {
	old := kvRequestWait
	kvRequestWait = d
	return func() { kvRequestWait = old }
}

// SetKVOpen sets how long one attempt to open a bucket waits and how long
// all of them wait without a caller's deadline, and returns the restore.
func SetKVOpen(attempt, total time.Duration) (restore func()) {
	oldAttempt, oldTotal := kvOpenAttempt, kvOpenWait
	kvOpenAttempt, kvOpenWait = attempt, total
	return func() { kvOpenAttempt, kvOpenWait = oldAttempt, oldTotal }
}

// SetKVAttemptWait sets how long one attempt of a KV write waits for its
// answer before it is sent again (kvAttemptWait) and returns the restore.
func SetKVAttemptWait(d time.Duration) (restore func()) {
	old := kvAttemptWait
	kvAttemptWait = d
	return func() { kvAttemptWait = old }
}
