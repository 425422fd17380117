package pipeline

import (
	"fmt"
	"os"
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
