// Package jobs keeps job specifications and the job lifecycle state machine in
// the lf_jobs key-value bucket, and defines the messages a batch job puts on
// the bus: a Request on lf.req.<job>.<model> and a Result on lf.res.<job>.
//
// A job moves validating → in_progress → finalizing → completed, or ends
// failed, cancelled (through cancelling) or expired. Every change is a
// compare-and-set on the key's revision (Store.Update), so concurrent writers
// never lose an update.
package jobs
