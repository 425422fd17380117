// Package train runs fine-tuning jobs over the bus: Submit records a
// training job in lf_jobs and puts its resolved train config on
// lf.train.<job> (the LF_TRAIN work queue) as a schemas.TrainJob; Start runs a train worker that
// takes those jobs one at a time, runs model/train with a progress callback
// that writes step, loss, learning rate, epoch and ETA into the job's
// record, stops at the next step when the job is cancelled, keeps the
// message in progress while it trains and acks it at the end.
//
// A worker that dies leaves the message unacked: after the consumer's
// AckWait it is redelivered to another worker, which resumes from the
// newest complete checkpoint in the job's output_dir. That directory (and
// the base model and data) must therefore be paths every train worker sees:
// one machine, or a shared filesystem.
package train
