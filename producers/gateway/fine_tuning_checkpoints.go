package gateway

import (
	"github.com/largeforge/largeforge/model/train"
	"github.com/largeforge/largeforge/schemas"
)

// A fine-tuning job created over HTTP checkpoints, and evaluates on its
// validation_file, at the end of each epoch, as OpenAI's does: its
// save_steps and eval_steps are its optimizer steps per epoch, computed at
// submit from the number of training records (those the trainer holds out
// for evaluation, eval_split, taken off; one optimizer step per batch_size
// records). save_total_limit keeps its default, 3: the last three epochs'
// checkpoints are listed, as OpenAI keeps. When the trainer drops records
// (none of a record's response tokens within max_seq_length) an epoch is
// shorter and the checkpoints fall every that many steps instead.

// epochCheckpoints is rc saving (and evaluating) at the end of each epoch
// of records training records.
func epochCheckpoints(rc schemas.RunConfig, records int) schemas.RunConfig {
	rows := records
	if rc.Method != "dpo" && rc.EvalDataset == "" {
		kept, _ := train.SplitEval(make([]train.Example, records), rc.EvalSplit, rc.Seed)
		rows = len(kept)
	}
	batch := rc.Training.PerDeviceBatchSize * rc.Training.GradientAccumulationSteps
	steps := max(1, (rows+batch-1)/batch)
	rc.Training.SaveSteps, rc.Training.EvalSteps = steps, steps
	return rc
}
