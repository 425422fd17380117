package schemas

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"reflect"
	"slices"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"
)

// TrainingConfig is the trainer configuration of DATA_DICTIONARY §2.1.
type TrainingConfig struct {
	ModelName                 string  `json:"model_name"`
	OutputDir                 string  `json:"output_dir"`
	NumEpochs                 int     `json:"num_epochs"`
	PerDeviceBatchSize        int     `json:"per_device_batch_size"`
	GradientAccumulationSteps int     `json:"gradient_accumulation_steps"`
	LearningRate              float64 `json:"learning_rate"`
	WeightDecay               float64 `json:"weight_decay"`
	WarmupRatio               float64 `json:"warmup_ratio"`
	MaxGradNorm               float64 `json:"max_grad_norm"`
	FP16                      bool    `json:"fp16"`
	BF16                      bool    `json:"bf16"`
	Optim                     string  `json:"optim"`
	LRSchedulerType           string  `json:"lr_scheduler_type"`
	SaveSteps                 int     `json:"save_steps"`
	SaveTotalLimit            int     `json:"save_total_limit"`
	LoggingSteps              int     `json:"logging_steps"`
	EvalSteps                 int     `json:"eval_steps"`
	// LRSchedulerKwargs are Hugging Face's lr_scheduler_kwargs: the extra
	// arguments of lr_scheduler_type (SchedulerKwargs lists each one's).
	LRSchedulerKwargs map[string]any `json:"lr_scheduler_kwargs,omitempty"`
	// OptimArgs are Hugging Face's optim_args, "key=value,key=value": the
	// extra arguments of optim (OptimizerArgs lists each one's).
	OptimArgs string `json:"optim_args,omitempty"`
}

// Optimizers are the accepted optim values: the Hugging Face Trainer's
// names of the optimizers the trainer implements.
var Optimizers = []string{"adamw_torch", "adamw_torch_fused", "adamw_hf", "sgd", "adafactor"}

// OptimizerArgs are the optim_args keys each optimizer takes (PyTorch's
// names); none is required.
var OptimizerArgs = map[string][]string{
	"adamw_torch":       {},
	"adamw_torch_fused": {},
	"adamw_hf":          {},
	"sgd":               {"momentum", "dampening", "nesterov"},
	"adafactor":         {},
}

// SchedulerKwargs are the lr_scheduler_kwargs keys each lr_scheduler_type
// takes (Hugging Face's names); SchedulerRequired those that must be given
// (for cosine_with_min_lr one of min_lr and min_lr_rate).
var (
	SchedulerKwargs = map[string][]string{
		"linear":               {},
		"cosine":               {"num_cycles"},
		"cosine_with_restarts": {"num_cycles"},
		"polynomial":           {"lr_end", "power"},
		"constant":             {},
		"constant_with_warmup": {},
		"inverse_sqrt":         {"timescale"},
		"reduce_lr_on_plateau": {"mode", "factor", "patience", "threshold", "threshold_mode", "cooldown", "min_lr", "eps"},
		"cosine_with_min_lr":   {"num_cycles", "min_lr", "min_lr_rate"},
		"warmup_stable_decay":  {"num_decay_steps", "num_stable_steps", "min_lr_ratio", "num_cycles", "warmup_type", "decay_type"},
	}
	SchedulerRequired = map[string][]string{
		"warmup_stable_decay": {"num_decay_steps"},
	}
)

// schedulerStrings are the lr_scheduler_kwargs that take a string and its
// accepted values; every other key takes a number.
var schedulerStrings = map[string][]string{
	"mode":           {"min", "max"},
	"threshold_mode": {"rel", "abs"},
	"warmup_type":    {"linear", "cosine", "1-sqrt"},
	"decay_type":     {"linear", "cosine", "1-sqrt"},
}

// Bounds of TrainingConfig.NumEpochs (§7.2).
const (
	MinNumEpochs = 1
	MaxNumEpochs = 100
)

// Upper limits of the sizes a training run takes: beyond them a run cannot
// fit any machine it is meant for, and is refused before it allocates
// anything (a LimitError, "Invalid <field>").
const (
	MaxPerDeviceBatchSize        = 4096
	MaxGradientAccumulationSteps = 65536
	// MaxLoraRank bounds lora.r: the trainer refuses a larger rank and the
	// adapter loader of serving refuses an adapter_config.json with one.
	MaxLoraRank = 256
)

// LRSchedulerTypes are the accepted lr_scheduler_type values (the Hugging
// Face names).
var LRSchedulerTypes = []string{
	"linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
	"constant_with_warmup", "inverse_sqrt", "reduce_lr_on_plateau",
	"cosine_with_min_lr", "warmup_stable_decay",
}

// DefaultTrainingConfig returns the §2.1 defaults (model_name and output_dir
// have none and are empty).
func DefaultTrainingConfig() TrainingConfig {
	return TrainingConfig{
		NumEpochs:                 3,
		PerDeviceBatchSize:        4,
		GradientAccumulationSteps: 4,
		LearningRate:              2e-5,
		WeightDecay:               0.01,
		WarmupRatio:               0.1,
		MaxGradNorm:               1.0,
		FP16:                      false,
		BF16:                      true,
		Optim:                     "adamw_torch",
		LRSchedulerType:           "cosine",
		SaveSteps:                 500,
		SaveTotalLimit:            3,
		LoggingSteps:              10,
		EvalSteps:                 500,
	}
}

// Validate checks the config. Where DATA_DICTIONARY §7 names an error the
// sentinel itself is returned (err.Error() is exactly the dictionary's
// string): ErrModelNameRequired, ErrInvalidModelPath,
// ErrLearningRateNotPositive, ErrBatchSizeTooSmall. optim must be one of
// Optimizers, lr_scheduler_kwargs and optim_args hold only the keys their
// scheduler and optimizer take (the required ones given). per_device_batch_size
// and gradient_accumulation_steps over their limits are a *LimitError
// ("Invalid per_device_batch_size: ..."). Every other problem wraps
// ErrInvalidConfig and names the field.
func (c TrainingConfig) Validate() error {
	if err := validateModelName(c.ModelName); err != nil {
		return err
	}
	if !(c.LearningRate > 0) || math.IsInf(c.LearningRate, 0) {
		return ErrLearningRateNotPositive
	}
	if c.PerDeviceBatchSize < 1 {
		return ErrBatchSizeTooSmall
	}
	if c.PerDeviceBatchSize > MaxPerDeviceBatchSize {
		return ConfigLimitError("per_device_batch_size", c.PerDeviceBatchSize, MaxPerDeviceBatchSize, "")
	}
	if c.GradientAccumulationSteps > MaxGradientAccumulationSteps {
		return ConfigLimitError("gradient_accumulation_steps", c.GradientAccumulationSteps, MaxGradientAccumulationSteps, "")
	}
	switch {
	case c.NumEpochs < MinNumEpochs || c.NumEpochs > MaxNumEpochs:
		return configError("num_epochs", "%d not in %d..%d", c.NumEpochs, MinNumEpochs, MaxNumEpochs)
	case c.GradientAccumulationSteps < 1:
		return configError("gradient_accumulation_steps", "%d is below 1", c.GradientAccumulationSteps)
	case !finiteIn(c.WeightDecay, 0, math.MaxFloat64):
		return configError("weight_decay", "%v must be a finite number >= 0", c.WeightDecay)
	case !finiteIn(c.WarmupRatio, 0, 1):
		return configError("warmup_ratio", "%v not in [0, 1]", c.WarmupRatio)
	case !finiteIn(c.MaxGradNorm, 0, math.MaxFloat64):
		return configError("max_grad_norm", "%v must be a finite number >= 0 (0 disables clipping)", c.MaxGradNorm)
	case c.FP16 && c.BF16:
		return configError("fp16", "fp16 and bf16 are mutually exclusive (bf16 defaults to true; set bf16: false)")
	case !slices.Contains(Optimizers, c.Optim):
		return configError("optim", "%q is not supported (supported: %s)", c.Optim, strings.Join(Optimizers, ", "))
	case !slices.Contains(LRSchedulerTypes, c.LRSchedulerType):
		return configError("lr_scheduler_type", "%q is not one of %s", c.LRSchedulerType, strings.Join(LRSchedulerTypes, ", "))
	case c.SaveSteps < 1:
		return configError("save_steps", "%d is below 1", c.SaveSteps)
	case c.SaveTotalLimit < 0:
		return configError("save_total_limit", "%d is negative (0 keeps every checkpoint)", c.SaveTotalLimit)
	case c.LoggingSteps < 1:
		return configError("logging_steps", "%d is below 1", c.LoggingSteps)
	case c.EvalSteps < 1:
		return configError("eval_steps", "%d is below 1", c.EvalSteps)
	}
	if _, err := ParseOptimArgs(c.Optim, c.OptimArgs); err != nil {
		return err
	}
	return c.validateSchedulerKwargs()
}

// validateSchedulerKwargs checks lr_scheduler_kwargs against the keys
// lr_scheduler_type takes and requires.
func (c TrainingConfig) validateSchedulerKwargs() error {
	allowed := SchedulerKwargs[c.LRSchedulerType]
	for k, v := range c.LRSchedulerKwargs {
		if !slices.Contains(allowed, k) {
			return configError("lr_scheduler_kwargs", "%s takes no %q (takes: %s)", c.LRSchedulerType, k, orNone(allowed))
		}
		if vals, ok := schedulerStrings[k]; ok {
			if s, isStr := v.(string); !isStr || !slices.Contains(vals, s) {
				return configError("lr_scheduler_kwargs", "%s: %v is not one of %s", k, v, strings.Join(vals, ", "))
			}
			continue
		}
		if f, ok := KwargNumber(v); !ok || !finiteIn(f, 0, math.MaxFloat64) {
			return configError("lr_scheduler_kwargs", "%s: %v must be a finite number >= 0", k, v)
		}
	}
	for _, k := range SchedulerRequired[c.LRSchedulerType] {
		if _, ok := c.LRSchedulerKwargs[k]; !ok {
			return configError("lr_scheduler_kwargs", "%s requires %q", c.LRSchedulerType, k)
		}
	}
	if c.LRSchedulerType == "cosine_with_min_lr" {
		_, lr := c.LRSchedulerKwargs["min_lr"]
		_, rate := c.LRSchedulerKwargs["min_lr_rate"]
		if lr == rate {
			return configError("lr_scheduler_kwargs", "cosine_with_min_lr requires one of \"min_lr\" and \"min_lr_rate\"")
		}
	}
	return nil
}

// KwargNumber is an lr_scheduler_kwargs value as a number (JSON and YAML
// numbers, or Go ints); ok is false for anything else.
func KwargNumber(v any) (f float64, ok bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case int:
		return float64(x), true
	case int64:
		return float64(x), true
	}
	return 0, false
}

func orNone(keys []string) string {
	if len(keys) == 0 {
		return "none"
	}
	return strings.Join(keys, ", ")
}

// ParseOptimArgs parses optim_args ("key=value,key=value", Hugging Face's
// form) for optim: each key must be one OptimizerArgs lists for it, each
// value a number (nesterov: true or false, read as 1 or 0).
func ParseOptimArgs(optim, args string) (map[string]float64, error) {
	out := map[string]float64{}
	if strings.TrimSpace(args) == "" {
		return out, nil
	}
	allowed := OptimizerArgs[optim]
	for _, kv := range strings.Split(args, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok || k == "" {
			return nil, configError("optim_args", "%q is not key=value", kv)
		}
		if !slices.Contains(allowed, k) {
			return nil, configError("optim_args", "%s takes no %q (takes: %s)", optim, k, orNone(allowed))
		}
		var f float64
		switch strings.ToLower(v) {
		case "true":
			f = 1
		case "false":
			f = 0
		default:
			if _, err := fmt.Sscanf(v, "%g", &f); err != nil || !finiteIn(f, 0, math.MaxFloat64) {
				return nil, configError("optim_args", "%s: %q must be a finite number >= 0", k, v)
			}
		}
		out[k] = f
	}
	return out, nil
}

// validateModelName applies the §7 model name rules.
func validateModelName(name string) error {
	if strings.TrimSpace(name) == "" {
		return ErrModelNameRequired
	}
	if strings.Contains(name, "..") {
		return ErrInvalidModelPath
	}
	return nil
}

func finiteIn(v, lo, hi float64) bool {
	return !math.IsNaN(v) && !math.IsInf(v, 0) && v >= lo && v <= hi
}

func configError(field, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrInvalidConfig, field, fmt.Sprintf(format, args...))
}

// ParseTrainingConfig decodes a TrainingConfig from YAML or JSON, applies
// the §2.1 defaults to absent (or null) fields, and validates it. fp16: true
// without bf16 turns the default bf16 off. Unknown
// keys are an error. Validation errors are returned as Validate returns them.
func ParseTrainingConfig(data []byte) (TrainingConfig, error) {
	c := DefaultTrainingConfig()
	if err := decodeConfig(data, &c, false); err != nil {
		return TrainingConfig{}, fmt.Errorf("training config: %w", err)
	}
	var given struct {
		BF16 *bool `json:"bf16"`
	}
	if j, err := yaml.YAMLToJSON(data); err == nil {
		_ = json.Unmarshal(j, &given)
	}
	if c.FP16 && given.BF16 == nil {
		c.BF16 = false // fp16 alone turns the default bf16 off
	}
	if err := c.Validate(); err != nil {
		return TrainingConfig{}, err
	}
	return c, nil
}

// LoadTrainingConfig reads and parses a YAML or JSON TrainingConfig file.
// Errors name the path and wrap the underlying error (errors.Is still
// matches the sentinels).
func LoadTrainingConfig(path string) (TrainingConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return TrainingConfig{}, fmt.Errorf("load training config: %w", err)
	}
	c, err := ParseTrainingConfig(data)
	if err != nil {
		return TrainingConfig{}, fmt.Errorf("load training config %s: %w", path, err)
	}
	return c, nil
}

// LoraConfig is the LoRA adapter configuration of DATA_DICTIONARY §2.2.
type LoraConfig struct {
	R             int      `json:"r"`
	LoraAlpha     int      `json:"lora_alpha"`
	LoraDropout   float64  `json:"lora_dropout"`
	TargetModules []string `json:"target_modules"`
	Bias          string   `json:"bias"`
	TaskType      string   `json:"task_type"`
}

// LoRA bias modes (PEFT names).
const (
	LoraBiasNone     = "none"
	LoraBiasAll      = "all"
	LoraBiasLoraOnly = "lora_only"
)

// LoraTaskCausalLM is the one task_type the trainer trains (PEFT's name).
const LoraTaskCausalLM = "CAUSAL_LM"

// DefaultLoraConfig returns the §2.2 defaults.
func DefaultLoraConfig() LoraConfig {
	return LoraConfig{
		R:             8,
		LoraAlpha:     16,
		LoraDropout:   0.05,
		TargetModules: []string{"q_proj", "k_proj", "v_proj", "o_proj"},
		Bias:          LoraBiasNone,
		TaskType:      LoraTaskCausalLM,
	}
}

// Scaling returns lora_alpha / r, the factor applied to the adapter's output.
func (c LoraConfig) Scaling() float64 { return float64(c.LoraAlpha) / float64(c.R) }

// Validate checks the config; errors wrap ErrInvalidConfig (r over
// MaxLoraRank is a *LimitError for "lora.r").
func (c LoraConfig) Validate() error {
	switch {
	case c.R < 1:
		return configError("r", "%d is below 1", c.R)
	case c.R > MaxLoraRank:
		return ConfigLimitError("lora.r", c.R, MaxLoraRank, "")
	case c.LoraAlpha < 1:
		return configError("lora_alpha", "%d is below 1", c.LoraAlpha)
	case !finiteIn(c.LoraDropout, 0, 1) || c.LoraDropout == 1:
		return configError("lora_dropout", "%v not in [0, 1)", c.LoraDropout)
	case len(c.TargetModules) == 0:
		return configError("target_modules", "must list at least one module")
	case c.Bias != LoraBiasNone && c.Bias != LoraBiasAll && c.Bias != LoraBiasLoraOnly:
		return configError("bias", "%q is not one of none, all, lora_only", c.Bias)
	case c.TaskType != LoraTaskCausalLM:
		return configError("task_type", "%q is not supported: the trainer trains causal language models only (task_type: %s)", c.TaskType, LoraTaskCausalLM)
	}
	seen := make(map[string]bool, len(c.TargetModules))
	for _, m := range c.TargetModules {
		if strings.TrimSpace(m) == "" {
			return configError("target_modules", "empty module name")
		}
		if seen[m] {
			return configError("target_modules", "%q listed twice", m)
		}
		seen[m] = true
	}
	return nil
}

// ParseLoraConfig decodes a LoraConfig from YAML or JSON, applies the §2.2
// defaults to absent fields, and validates it. Unknown keys are an error.
func ParseLoraConfig(data []byte) (LoraConfig, error) {
	c := DefaultLoraConfig()
	if err := decodeConfig(data, &c, false); err != nil {
		return LoraConfig{}, fmt.Errorf("lora config: %w", err)
	}
	if err := c.Validate(); err != nil {
		return LoraConfig{}, err
	}
	return c, nil
}

// LoadLoraConfig reads and parses a YAML or JSON LoraConfig file.
func LoadLoraConfig(path string) (LoraConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return LoraConfig{}, fmt.Errorf("load lora config: %w", err)
	}
	c, err := ParseLoraConfig(data)
	if err != nil {
		return LoraConfig{}, fmt.Errorf("load lora config %s: %w", path, err)
	}
	return c, nil
}

// ExpertConfig describes one routable expert model (§2.3).
type ExpertConfig struct {
	Name        string   `json:"name"`
	ModelPath   string   `json:"model_path"`
	Description string   `json:"description"`
	Domains     []string `json:"domains"`
	Keywords    []string `json:"keywords"`
	// Endpoint is the inference endpoint URL; "" (the dictionary's null)
	// means the expert is served on the bus.
	Endpoint  string `json:"endpoint,omitempty"`
	Priority  int    `json:"priority"`
	MaxTokens int    `json:"max_tokens"`
}

// DefaultExpertConfig returns the §2.3 defaults (name, model_path and
// description have none).
func DefaultExpertConfig() ExpertConfig {
	return ExpertConfig{Domains: []string{}, Keywords: []string{}, MaxTokens: 2048}
}

// Validate checks one expert. The name must be usable as a NATS subject
// token (no whitespace, '.', '*', '>'). A model_path containing ".." is
// ErrInvalidModelPath; other problems wrap ErrInvalidConfig.
func (c ExpertConfig) Validate() error {
	if c.Name == "" {
		return configError("name", "must not be empty")
	}
	if strings.ContainsAny(c.Name, " \t\r\n.*>") {
		return configError("name", "%q must not contain whitespace, '.', '*' or '>'", c.Name)
	}
	if strings.TrimSpace(c.ModelPath) == "" {
		return configError("model_path", "expert %q: must not be empty", c.Name)
	}
	if strings.Contains(c.ModelPath, "..") {
		return ErrInvalidModelPath
	}
	if c.MaxTokens < 1 {
		return configError("max_tokens", "expert %q: %d is below 1", c.Name, c.MaxTokens)
	}
	return nil
}

// ParseExperts decodes a list of experts from YAML or JSON: either a list,
// or an object whose only key is "experts" holding the list. Defaults are
// applied to each expert's absent fields; each is validated and names must
// be unique.
func ParseExperts(data []byte) ([]ExpertConfig, error) {
	j, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("experts: %w: %v", ErrInvalidConfig, err)
	}
	j = bytes.TrimSpace(j)
	if len(j) > 0 && j[0] == '{' {
		var wrapper map[string]json.RawMessage
		if err := json.Unmarshal(j, &wrapper); err != nil {
			return nil, fmt.Errorf("experts: %w: %v", ErrInvalidConfig, err)
		}
		for k := range wrapper {
			if k != "experts" {
				return nil, fmt.Errorf("experts: %w: unknown key %q (want experts)", ErrInvalidConfig, k)
			}
		}
		j = bytes.TrimSpace(wrapper["experts"])
	}
	if len(j) == 0 || string(j) == "null" {
		return nil, fmt.Errorf("experts: %w: no experts listed", ErrInvalidConfig)
	}
	var items []json.RawMessage
	if err := json.Unmarshal(j, &items); err != nil {
		return nil, fmt.Errorf("experts: %w: want a list of experts: %v", ErrInvalidConfig, err)
	}
	out := make([]ExpertConfig, 0, len(items))
	seen := make(map[string]bool, len(items))
	for i, item := range items {
		c := DefaultExpertConfig()
		if err := decodeConfig(item, &c, true); err != nil {
			return nil, fmt.Errorf("experts[%d]: %w", i, err)
		}
		if err := c.Validate(); err != nil {
			return nil, fmt.Errorf("experts[%d]: %w", i, err)
		}
		if seen[c.Name] {
			return nil, fmt.Errorf("experts[%d]: %w: name %q used twice", i, ErrInvalidConfig, c.Name)
		}
		seen[c.Name] = true
		out = append(out, c)
	}
	return out, nil
}

// LoadExperts reads and parses an experts file (see ParseExperts).
func LoadExperts(path string) ([]ExpertConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load experts: %w", err)
	}
	cs, err := ParseExperts(data)
	if err != nil {
		return nil, fmt.Errorf("load experts %s: %w", path, err)
	}
	return cs, nil
}

// decodeConfig decodes YAML or JSON (isJSON: data is already JSON) into
// dst, which holds the defaults. Keys must match dst's JSON names exactly;
// absent and null keys keep the default.
func decodeConfig(data []byte, dst any, isJSON bool) error {
	j := data
	if !isJSON {
		var err error
		if j, err = yaml.YAMLToJSON(data); err != nil {
			return fmt.Errorf("%w: %v", ErrInvalidConfig, err)
		}
	}
	j = bytes.TrimSpace(j)
	if len(j) == 0 || string(j) == "null" {
		return nil // empty document: all defaults
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(j, &raw); err != nil {
		return fmt.Errorf("%w: want a mapping of settings: %v", ErrInvalidConfig, err)
	}
	known := jsonNames(reflect.TypeOf(dst).Elem())
	var unknown []string
	for k := range raw {
		if !known[k] {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return fmt.Errorf("%w: unknown key %q", ErrInvalidConfig, unknown[0])
	}
	for k, v := range raw {
		if string(bytes.TrimSpace(v)) == "null" {
			delete(raw, k) // null means absent: keep the default
		}
	}
	j, err := json.Marshal(raw)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return fmt.Errorf("%w: %s: got %s, want %s", ErrInvalidConfig, te.Field, te.Value, te.Type)
		}
		return fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	}
	return nil
}

// jsonNames returns the JSON names of a struct type's fields.
func jsonNames(t reflect.Type) map[string]bool {
	names := make(map[string]bool, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		tag := t.Field(i).Tag.Get("json")
		name, _, _ := strings.Cut(tag, ",")
		if name != "" && name != "-" {
			names[name] = true
		}
	}
	return names
}
