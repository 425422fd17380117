package pipeline

import (
	"fmt"
	"os"
	"time"
)

// DefaultWorkerID names a worker process that was given no id: its host
// name and process id ("host-1234"), unique on a cluster of machines.
func DefaultWorkerID() string {
	host, _ := os.Hostname()
	if host == "" {
		host = "worker"
	}
	return fmt.Sprintf("%s-%d", host, os.Getpid())
}

// CheckWorkerDurations checks a worker's durations: none negative (named
// in the error), and its heartbeat period below the lf_workers TTL, so a
// live worker never expires between heartbeats. Callers wrap the error in
// their own invalid-option error.
func CheckWorkerDurations(heartbeat time.Duration, named map[string]time.Duration) error {
	for name, v := range named {
		if v < 0 {
			return fmt.Errorf("%s %v is negative", name, v)
		}
	}
	if heartbeat < 0 {
		return fmt.Errorf("heartbeat %v is negative", heartbeat)
	}
	if heartbeat >= WorkerHeartbeatTTL {
		return fmt.Errorf("heartbeat every %v must be below the lf_workers TTL %v", heartbeat, WorkerHeartbeatTTL)
	}
	return nil
}
