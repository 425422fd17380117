package jobs

import (
	"crypto/rand"
	"encoding/hex"

	"github.com/largeforge/largeforge/schemas"
)

// KindTraining is a fine-tuning job: one message on lf.train.<job> that a
// worker with --role train runs. Its record moves validating → in_progress
// → finalizing → completed (the last two in one write), or ends failed, or
// cancelled through cancelling (the train worker, not the results sink,
// finishes a cancel).
const KindTraining = schemas.KindTraining

// TrainingProgress is a training job's progress in its record (Job.Training),
// written by the train worker as it goes.
type TrainingProgress struct {
	OutputDir string `json:"output_dir"`
	// The training log's names: global_step, loss, learning_rate, epoch,
	// grad_norm, train_samples_per_second.
	Step             int     `json:"global_step"`
	MaxSteps         int     `json:"max_steps"`
	Loss             float64 `json:"loss"`
	LearningRate     float64 `json:"learning_rate"`
	Epoch            float64 `json:"epoch"`
	GradNorm         float64 `json:"grad_norm"`
	SamplesPerSecond float64 `json:"train_samples_per_second"`
	// ETASeconds is the estimated time left (0 until it can be estimated,
	// and at the end).
	ETASeconds float64 `json:"eta_seconds"`
	// Worker is the id of the worker that runs (or last ran) the job;
	// Attempt the delivery of its message that worker took (2 and up after
	// a takeover).
	Worker      string `json:"worker,omitempty"`
	Attempt     int    `json:"attempt,omitempty"`
	ResumedFrom string `json:"resumed_from,omitempty"` // the checkpoint the attempt resumed from
	// Artifacts is the job's prefix in lf_artifacts (train/<job>/): its
	// stored checkpoints (checkpoint-<step>/...) and final output
	// (final/...), which any machine can read.
	Artifacts string `json:"artifacts,omitempty"`
	// FineTunedModel is the name the trained model is pushed
	// under in lf_models once the job completes (OpenAI's
	// fine_tuned_model): the job id; FineTunedDigest the version pushed.
	// Any infer worker serves it by that name (worker --model NAME).
	FineTunedModel  string `json:"fine_tuned_model,omitempty"`
	FineTunedDigest string `json:"fine_tuned_digest,omitempty"`
	// FineTunedAdapter is, for a LoRA job, the name its PEFT adapter is
	// pushed under (<job>-adapter); FineTunedModel is then the base with
	// the adapter merged in.
	FineTunedAdapter string `json:"fine_tuned_adapter,omitempty"`
	UpdatedAt        int64  `json:"updated_at,omitempty"`
}

// NewTrainingID returns a fresh training job id: "train_" and 24 hex digits.
func NewTrainingID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "train_" + hex.EncodeToString(b[:])
}
