package schemas

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"

	"sigs.k8s.io/yaml"
)

// RunConfig is a train.yaml and the run a training job carries on
// lf.train.<job>: the method (sft or dpo), the data, and the §2.1
// TrainingConfig fields (inline, with the table's defaults), whose
// model_name is the base model. model/train runs it.
type RunConfig struct {
	Method string `json:"method"` // "sft" or "dpo"
	// BaseModel is an alias of model_name (the base model, a Hugging Face
	// checkpoint directory); Model() is the one to read.
	BaseModel string `json:"base_model"`
	// ModelDigest pins a model_name that names a model pushed to
	// lf_models: the version current when the job was submitted, which
	// every run of the job (resumed ones too) fetches. Submit sets it; it
	// is not a train.yaml key.
	ModelDigest string `json:"model_digest,omitempty"`
	Dataset     string `json:"dataset"` // an ingested dataset's name, read from DataDir
	// EvalDataset is a dataset (in lf_artifacts, as Dataset) evaluated
	// every eval_steps and at the last step instead of a held-out
	// eval_split (which must be 0): a fine-tuning job's validation_file.
	// The gateway sets it; it is not a train.yaml key.
	EvalDataset  string   `json:"eval_dataset,omitempty"`
	DataDir      string   `json:"data_dir"`       // where ingested datasets live (a --data-dir)
	DataFiles    []string `json:"data_files"`     // Parquet parts or JSONL files
	Format       string   `json:"format"`         // the JSONL files' format (detected when empty)
	MaxSeqLength int      `json:"max_seq_length"` // 0: the trainer's default, or the model's max_position_embeddings when shorter
	Seed         int64    `json:"seed"`           // default DefaultTrainSeed
	// Resume requires a checkpoint to continue from; without it the newest
	// checkpoint in output_dir, if any, is resumed all the same.
	Resume bool `json:"resume"`
	// EvalSplit is the fraction of the rendered examples held out (chosen
	// from the seed) and evaluated every eval_steps; 0 evaluates nothing.
	// A train.yaml without it holds out DefaultEvalSplit (SFT).
	EvalSplit float64 `json:"eval_split"`
	// Beta is the DPO loss's beta (default DefaultDPOBeta).
	Beta float64 `json:"beta"`
	// Packing packs SFT examples into rows of max_seq_length.
	Packing bool `json:"packing"`
	// PromptTemplate renders Alpaca records: PromptTemplateAlpaca (the
	// default) or PromptTemplateChat (the model's chat template).
	PromptTemplate string `json:"prompt_template"`
	// Engine computes the forward and backward passes of SFT and DPO, full
	// or LoRA: TrainEngineNative (the CPU kernels, the optimizer step on
	// the CPU; the default on the pure Go backend) or TrainEngineGraph
	// (GoMLX graphs; the default on XLA).
	Engine   string         `json:"engine,omitempty"`
	Training TrainingConfig `json:"-"`
	// LoRA, when the yaml has a lora: section (§2.2 fields with their
	// defaults), trains adapters instead of every weight.
	LoRA *LoraConfig `json:"-"`
}

// Defaults of a train.yaml.
const (
	// DefaultTrainSeed is the default shuffling seed (the Hugging Face
	// Trainer's).
	DefaultTrainSeed = 42
	// DefaultDPOBeta is the DPO sigmoid loss's beta.
	DefaultDPOBeta = 0.1
	// DefaultEvalSplit is the eval_split of an SFT train.yaml that names
	// none: a tenth of the examples (at least one) is held out and
	// evaluated every eval_steps and at the end.
	DefaultEvalSplit = 0.1
)

// The prompt_template values.
const (
	// PromptTemplateAlpaca renders the Stanford Alpaca prompt (the default).
	PromptTemplateAlpaca = "alpaca"
	// PromptTemplateChat renders the instruction (and input) as a user
	// turn and the output as the assistant's, with the model's chat
	// template.
	PromptTemplateChat = "chat"
)

// The engine values.
const (
	TrainEngineNative = "native"
	TrainEngineGraph  = "graph"
)

// runKeys are a train.yaml's own keys; the rest are TrainingConfig's.
var runKeys = []string{"method", "base_model", "dataset", "data_dir", "data_files", "format", "max_seq_length", "seed", "resume", "lora", "eval_split", "beta", "packing", "prompt_template", "engine"}

// ParseRunConfig decodes a train.yaml (YAML or JSON). The TrainingConfig
// fields get the §2.1 defaults; base_model is an alias of model_name (both
// given, they must agree). An SFT run without eval_split gets
// DefaultEvalSplit. Unknown keys are an error. The config is validated;
// that the model directory exists is checked by model/train's CheckModel.
func ParseRunConfig(data []byte) (RunConfig, error) {
	var raw map[string]any
	if err := yaml.Unmarshal(data, &raw); err != nil {
		return RunConfig{}, fmt.Errorf("%w: train config: %w", ErrInvalidConfig, err)
	}
	own := map[string]any{}
	for _, k := range runKeys {
		if v, ok := raw[k]; ok {
			own[k] = v
			delete(raw, k)
		}
	}
	rc := RunConfig{Method: "sft", Seed: DefaultTrainSeed, Beta: DefaultDPOBeta}
	if err := remarshal(own, &rc); err != nil {
		return RunConfig{}, fmt.Errorf("%w: train config: %w", ErrInvalidConfig, err)
	}
	if l, ok := own["lora"]; ok {
		b, err := json.Marshal(l)
		if err != nil {
			return RunConfig{}, fmt.Errorf("%w: train config: %w", ErrInvalidConfig, err)
		}
		if string(b) == "null" {
			b = []byte("{}")
		}
		lc, err := ParseLoraConfig(b)
		if err != nil {
			return RunConfig{}, err
		}
		rc.LoRA = &lc
	}
	if name, ok := raw["model_name"]; !ok && rc.BaseModel != "" {
		raw["model_name"] = rc.BaseModel
	} else if s, _ := name.(string); ok && rc.BaseModel != "" && s != rc.BaseModel {
		return RunConfig{}, fmt.Errorf("%w: model_name %v and its alias base_model %s differ", ErrInvalidConfig, name, rc.BaseModel)
	}
	if _, ok := own["eval_split"]; !ok && rc.Method == "sft" {
		rc.EvalSplit = DefaultEvalSplit
	}
	rest, err := json.Marshal(raw)
	if err != nil {
		return RunConfig{}, fmt.Errorf("%w: train config: %w", ErrInvalidConfig, err)
	}
	rc.Training, err = ParseTrainingConfig(rest)
	if err != nil {
		return RunConfig{}, err
	}
	rc.BaseModel = rc.Training.ModelName
	return rc, rc.Validate()
}

// remarshal decodes v, a decoded YAML mapping, into dst through JSON.
func remarshal(v any, dst any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, dst)
}

// Model is the base model: model_name, or its alias base_model when only
// that is set.
func (rc RunConfig) Model() string {
	if rc.Training.ModelName != "" {
		return rc.Training.ModelName
	}
	return rc.BaseModel
}

// WithModel is rc with its base model set to dir (model_name and the alias).
func (rc RunConfig) WithModel(dir string) RunConfig {
	rc.BaseModel, rc.Training.ModelName = dir, dir
	return rc
}

// Validate checks the run config (the TrainingConfig included; LoRA is
// checked where the trainer takes it);
// its own errors wrap ErrInvalidConfig. A dataset name follows the rule of
// ingested datasets (ValidateDatasetName). What depends on the base model
// (its directory, max_seq_length against its max_position_embeddings, the
// memory the run needs) is checked by model/train.
func (rc RunConfig) Validate() error {
	if rc.Dataset != "" {
		if err := ValidateDatasetName(rc.Dataset); err != nil {
			return fmt.Errorf("%w: dataset: %w", ErrInvalidConfig, err)
		}
	}
	if rc.EvalDataset != "" {
		if err := ValidateDatasetName(rc.EvalDataset); err != nil {
			return fmt.Errorf("%w: eval_dataset: %w", ErrInvalidConfig, err)
		}
	}
	switch {
	case rc.EvalDataset != "" && (rc.Dataset == "" || rc.Method == "dpo" || rc.EvalSplit != 0):
		return fmt.Errorf("%w: eval_dataset %s: an sft run over a dataset, with eval_split 0 (the eval dataset replaces the split)", ErrInvalidConfig, rc.EvalDataset)
	case rc.Method != "sft" && rc.Method != "dpo":
		return fmt.Errorf("%w: method %q (want sft or dpo)", ErrInvalidConfig, rc.Method)
	case !(rc.Beta > 0) || math.IsInf(rc.Beta, 0):
		return fmt.Errorf("%w: beta %v must be a positive number", ErrInvalidConfig, rc.Beta)
	case rc.BaseModel != "" && rc.Training.ModelName != "" && rc.BaseModel != rc.Training.ModelName:
		return fmt.Errorf("%w: model_name %s and its alias base_model %s differ", ErrInvalidConfig, rc.Training.ModelName, rc.BaseModel)
	case rc.Method == "dpo" && rc.EvalSplit != 0:
		return fmt.Errorf("%w: eval_split %v: dpo runs no evaluation (leave eval_split out or 0)", ErrInvalidConfig, rc.EvalSplit)
	case rc.Training.LRSchedulerType == "reduce_lr_on_plateau" && (rc.Method == "dpo" || (rc.EvalSplit == 0 && rc.EvalDataset == "")):
		return fmt.Errorf("%w: lr_scheduler_type reduce_lr_on_plateau needs evaluation: an sft run with eval_split > 0", ErrInvalidConfig)
	case (rc.Dataset == "") == (len(rc.DataFiles) == 0):
		return fmt.Errorf("%w: give either dataset or data_files", ErrInvalidConfig)
	case rc.Training.OutputDir == "":
		return fmt.Errorf("%w: output_dir is required", ErrInvalidConfig)
	case !(rc.EvalSplit >= 0 && rc.EvalSplit < 1):
		return fmt.Errorf("%w: eval_split %v not in [0, 1)", ErrInvalidConfig, rc.EvalSplit)
	case rc.MaxSeqLength != 0 && rc.MaxSeqLength < 2:
		return fmt.Errorf("%w: max_seq_length %d is below 2", ErrInvalidConfig, rc.MaxSeqLength)
	case rc.PromptTemplate != "" && rc.PromptTemplate != PromptTemplateAlpaca && rc.PromptTemplate != PromptTemplateChat:
		return fmt.Errorf("%w: prompt_template %q (want %s or %s)", ErrInvalidConfig, rc.PromptTemplate, PromptTemplateAlpaca, PromptTemplateChat)
	case rc.Engine != "" && rc.Engine != TrainEngineNative && rc.Engine != TrainEngineGraph:
		return fmt.Errorf("%w: engine %q (want %s or %s)", ErrInvalidConfig, rc.Engine, TrainEngineNative, TrainEngineGraph)
	}
	tc := rc.Training
	tc.ModelName = rc.Model()
	return tc.Validate()
}

// TrainJob is a training job on lf.train.<job>: the job id and its run
// config, resolved (absolute paths, every default filled in).
type TrainJob struct {
	Job string
	Run RunConfig
}

// trainJobWire is TrainJob on the bus: the run config's own fields under
// "run", its TrainingConfig and LoraConfig beside them.
type trainJobWire struct {
	Job      string         `json:"job"`
	Run      RunConfig      `json:"run"`
	Training TrainingConfig `json:"training"`
	LoRA     *LoraConfig    `json:"lora,omitempty"`
}

// Encode is the job as JSON.
func (j TrainJob) Encode() ([]byte, error) {
	return json.Marshal(trainJobWire{Job: j.Job, Run: j.Run, Training: j.Run.Training, LoRA: j.Run.LoRA})
}

// DecodeTrainJob decodes and validates a training job message; errors
// wrap ErrBadTrainJob.
func DecodeTrainJob(data []byte) (TrainJob, error) {
	var w trainJobWire
	if err := json.Unmarshal(data, &w); err != nil {
		return TrainJob{}, fmt.Errorf("%w: %w", ErrBadTrainJob, err)
	}
	if err := ValidJobID(w.Job); err != nil {
		return TrainJob{}, fmt.Errorf("%w: %w", ErrBadTrainJob, err)
	}
	rc := w.Run
	rc.Training, rc.LoRA = w.Training, w.LoRA
	if err := rc.Validate(); err != nil {
		return TrainJob{}, fmt.Errorf("%w: job %s: %w", ErrBadTrainJob, w.Job, err)
	}
	return TrainJob{Job: w.Job, Run: rc}, nil
}

// CheckpointModelInfix joins a training job's id and a checkpoint's step in
// the lf_models name of the checkpoint: <job>-ckpt-step-<step>.
const CheckpointModelInfix = "-ckpt-step-"

// CheckpointModel is the lf_models name a training job's checkpoint of
// step is pushed under (the train worker pushes it; the gateway's
// fine-tuning checkpoints name it).
func CheckpointModel(job string, step int) string {
	return job + CheckpointModelInfix + strconv.Itoa(step)
}
