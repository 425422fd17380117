package train

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/gomlx/gomlx/pkg/core/tensors"

	"github.com/largeforge/largeforge/internal/atomicfile"
	"github.com/largeforge/largeforge/model/checkpoint"
)

// Files the trainer writes beside the model files.
const (
	TrainerStateFile = "trainer_state.json"
	TrainingArgsFile = "training_args.json"
	OptimizerFile    = "optimizer.safetensors"
	CheckpointPrefix = "checkpoint-"
)

// trainerState is the Hugging Face Trainer's trainer_state.json.
type trainerState struct {
	BestMetric          *float64         `json:"best_metric"`
	BestModelCheckpoint *string          `json:"best_model_checkpoint"`
	Epoch               float64          `json:"epoch"`
	EvalSteps           int              `json:"eval_steps"`
	GlobalStep          int              `json:"global_step"`
	IsHyperParamSearch  bool             `json:"is_hyper_param_search"`
	IsLocalProcessZero  bool             `json:"is_local_process_zero"`
	IsWorldProcessZero  bool             `json:"is_world_process_zero"`
	LogHistory          []map[string]any `json:"log_history"`
	LoggingSteps        int              `json:"logging_steps"`
	MaxSteps            int              `json:"max_steps"`
	NumInputTokensSeen  int              `json:"num_input_tokens_seen"`
	NumTrainEpochs      int              `json:"num_train_epochs"`
	SaveSteps           int              `json:"save_steps"`
	TotalFlos           float64          `json:"total_flos"`
	TrainBatchSize      int              `json:"train_batch_size"`
}

func (t *Trainer) state(plan Plan, epoch float64) trainerState {
	hist := t.history
	if hist == nil {
		hist = []map[string]any{}
	}
	return trainerState{
		Epoch: epoch, EvalSteps: t.cfg.EvalSteps, GlobalStep: t.step, IsLocalProcessZero: true, IsWorldProcessZero: true,
		LogHistory: hist, LoggingSteps: t.cfg.LoggingSteps, MaxSteps: plan.TotalSteps, NumTrainEpochs: t.cfg.NumEpochs,
		SaveSteps: t.cfg.SaveSteps, TrainBatchSize: t.cfg.PerDeviceBatchSize,
		NumInputTokensSeen: int(math.Round(float64(t.epochTokens) * epoch)),
	}
}

func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return atomicfile.WriteBytes(path, append(data, '\n'))
}

// saveModel writes the weights (the adapter under LoRA, with its README.md
// model card), tokenizer files, trainer state and training arguments
// (training_args.json, and training_args.bin as a pickled dict) into dir.
func (t *Trainer) saveModel(dir string, plan Plan, epoch float64) error {
	if t.lora != nil {
		if err := t.saveAdapter(dir); err != nil {
			return err
		}
		if err := t.writeModelCard(dir); err != nil {
			return err
		}
	} else {
		ck, err := t.Checkpoint()
		if err != nil {
			return err
		}
		if err := t.checkFiniteTensors(ck.Tensors); err != nil {
			return err
		}
		if err := checkpoint.Save(dir, ck); err != nil {
			return fmt.Errorf("save model: %w", err)
		}
	}
	if t.opts.tokenizerDir != "" {
		if _, err := checkpoint.CopyTokenizer(t.opts.tokenizerDir, dir); err != nil {
			return fmt.Errorf("save model: %w", err)
		}
	}
	if t.opts.chatTemplate != "" {
		if err := checkpoint.SetChatTemplate(dir, t.opts.chatTemplate); err != nil {
			return fmt.Errorf("save model: %w", err)
		}
	}
	if err := writeJSON(filepath.Join(dir, TrainerStateFile), t.state(plan, epoch)); err != nil {
		return err
	}
	if err := writeJSON(filepath.Join(dir, TrainingArgsFile), t.cfg); err != nil {
		return err
	}
	bin, err := PickleDict(t.trainingArgs())
	if err != nil {
		return err
	}
	return atomicfile.WriteBytes(filepath.Join(dir, TrainingArgsBinFile), bin)
}

// saveCheckpoint writes checkpoint-<step>/ (with the AdamW state) and
// removes the oldest checkpoints beyond save_total_limit.
func (t *Trainer) saveCheckpoint(plan Plan, epoch float64) (string, error) {
	dir := filepath.Join(t.cfg.OutputDir, CheckpointPrefix+strconv.Itoa(t.step))
	if err := t.saveModel(dir, plan, epoch); err != nil {
		return "", err
	}
	opt := map[string]*checkpoint.Tensor{}
	for i, n := range t.names {
		for _, part := range []struct {
			key string
			x   *tensors.Tensor
		}{{t.optim.stateKey1, t.mom[i]}, {t.optim.stateKey2, t.vel[i]}} {
			v, err := tensors.CopyFlatData[float32](part.x)
			if err != nil {
				return "", fmt.Errorf("%w: optimizer state: %w", ErrBackend, err)
			}
			opt[part.key+n] = &checkpoint.Tensor{Shape: part.x.Shape().Dimensions, Data: v}
		}
	}
	if err := checkpoint.WriteSafetensors(filepath.Join(dir, OptimizerFile), opt,
		map[string]string{"step": strconv.Itoa(t.step), "optimizer": t.optim.label}); err != nil {
		return "", err
	}
	if t.cfg.SaveTotalLimit > 0 {
		cks, err := ListCheckpoints(t.cfg.OutputDir)
		if err != nil {
			return "", err
		}
		for len(cks) > t.cfg.SaveTotalLimit {
			if err := os.RemoveAll(cks[0]); err != nil {
				return "", fmt.Errorf("remove old checkpoint: %w", err)
			}
			cks = cks[1:]
		}
	}
	return dir, t.checkpointSaved(dir)
}

// saveFinal writes the final model and the loss curve into output_dir.
func (t *Trainer) saveFinal(plan Plan) error {
	if err := t.saveModel(t.cfg.OutputDir, plan, float64(t.cfg.NumEpochs)); err != nil {
		return err
	}
	path := filepath.Join(t.cfg.OutputDir, LossCurveFile)
	run := fmt.Sprintf("%s (%s)", t.runName(), filepath.Base(t.cfg.ModelName))
	if err := WriteLossCurve(path, run, t.history); err != nil {
		return err
	}
	t.log.Info().Str("loss_curve", path).Msg("loss curve written")
	return nil
}

// ListCheckpoints returns the checkpoint-<step> directories under dir,
// oldest (lowest step) first.
func ListCheckpoints(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list checkpoints: %w", err)
	}
	type ck struct {
		step int
		path string
	}
	var cks []ck
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), CheckpointPrefix)
		if !ok || !e.IsDir() {
			continue
		}
		n, err := strconv.Atoi(rest)
		if err != nil {
			continue
		}
		cks = append(cks, ck{n, filepath.Join(dir, e.Name())})
	}
	sort.Slice(cks, func(i, j int) bool { return cks[i].step < cks[j].step })
	out := make([]string, len(cks))
	for i, c := range cks {
		out[i] = c.path
	}
	return out, nil
}
