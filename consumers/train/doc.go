// Package train runs fine-tuning jobs over the bus: Submit records a
// training job in lf_jobs and puts its resolved train config on
// lf.train.<job> (the LF_TRAIN work queue) as a schemas.TrainJob; Start runs a train worker that
// takes those jobs one at a time, runs model/train with a progress callback
// that writes step, loss, learning rate, epoch and ETA into the job's
// record, stops at the next step when the job is cancelled, keeps the
// message in progress while it trains and acks it at the end.
//
// Nothing of a job stays on one machine only. Each checkpoint (weights or
// adapter, optimizer state, trainer_state.json), once model/train has
// written it whole, is stored in lf_artifacts as
// train/<job>/checkpoint-<step>/... followed by its manifest
// train/<job>/checkpoint-<step>.json, which alone makes it count as stored,
// and pushed to lf_models as CheckpointModel(job, step),
// <job>-ckpt-step-<step> (removed there when the stored one is removed);
// the final output (model or adapter, trainer state, loss curve) goes to
// train/<job>/final/... and final.json, and is pushed to lf_models under
// FineTunedModel(job), the job id, which the job record reports
// (Training.FineTunedModel) and any infer worker serves by name. A LoRA
// job's output is its adapter: the model pushed as the job id is then the
// base with the adapter merged in (as `largeforge adapters merge` does),
// and the PEFT adapter itself is pushed as FineTunedAdapter(job),
// <job>-adapter (Training.FineTunedAdapter). Every
// step and evaluation is a schemas.TrainEvent on lf.events.train.<job>
// (stream LF_EVENTS). The job's output_dir (or <OutputRoot>/<job>) is a
// local copy.
//
// A worker that dies leaves the message unacked: after the consumer's
// AckWait it is redelivered to another worker, on any machine, which
// fetches the newest stored checkpoint into its local output directory
// (when it has none as new) and resumes from it, as from its own.
package train
