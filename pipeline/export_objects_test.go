package pipeline

import "time"

// SetObjectWait sets how long one wait of an object store call for the
// server lasts (objectChunkWait) and returns the restore.
func SetObjectWait(d time.Duration) (restore func()) {
	old := objectChunkWait
	objectChunkWait = d
	return func() { objectChunkWait = old }
}
