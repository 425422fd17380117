// Package jobs keeps job specifications and the job lifecycle state machine in
// the lf_jobs key-value bucket. The messages a batch job puts on the bus (a
// schemas.Request on lf.req.<job>.<model>, a schemas.Result on lf.res.<job>)
// are defined in schemas; jobs publishes the control markers and cancels.
//
// A job moves validating → in_progress → finalizing → completed, or ends
// failed, cancelled (through cancelling) or expired. Every change is a
// compare-and-set on the key's revision (Store.Update), so concurrent writers
// never lose an update.
package jobs
