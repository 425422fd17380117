// Package jobs keeps job specifications and the job lifecycle state machine in the lf_jobs key-value bucket.
package jobs
