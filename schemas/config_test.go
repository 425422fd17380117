package schemas

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestParseTrainingConfig(t *testing.T) {
	def := DefaultTrainingConfig()
	def.ModelName = "models/stories260K"
	tests := []struct {
		name     string
		in       string
		want     *TrainingConfig
		wantErr  error
		wantText string // exact Error() where the dictionary names one
	}{
		{name: "yaml defaults", in: "model_name: models/stories260K\n", want: &def},
		{name: "json defaults", in: `{"model_name":"models/stories260K"}`, want: &def},
		{name: "null keeps default", in: "model_name: models/stories260K\nnum_epochs: null\n", want: &def},
		{name: "overrides", in: "model_name: m\noutput_dir: out\nnum_epochs: 5\nlearning_rate: 1e-4\nbf16: false\nfp16: true\nwarmup_ratio: 0\nsave_total_limit: 0\nlr_scheduler_type: linear\n",
			want: func() *TrainingConfig {
				c := DefaultTrainingConfig()
				c.ModelName, c.OutputDir, c.NumEpochs, c.LearningRate = "m", "out", 5, 1e-4
				c.BF16, c.FP16, c.WarmupRatio, c.SaveTotalLimit, c.LRSchedulerType = false, true, 0, 0, "linear"
				return &c
			}()},
		{name: "missing model", in: "num_epochs: 2\n", wantErr: ErrModelNameRequired, wantText: "Model name required"},
		{name: "empty document", in: "", wantErr: ErrModelNameRequired, wantText: "Model name required"},
		{name: "dotdot model", in: "model_name: ../etc/passwd\n", wantErr: ErrInvalidModelPath, wantText: "Invalid model path"},
		{name: "zero lr", in: "model_name: m\nlearning_rate: 0\n", wantErr: ErrLearningRateNotPositive, wantText: "Learning rate must be positive"},
		{name: "negative lr", in: "model_name: m\nlearning_rate: -1e-5\n", wantErr: ErrLearningRateNotPositive, wantText: "Learning rate must be positive"},
		{name: "batch zero", in: "model_name: m\nper_device_batch_size: 0\n", wantErr: ErrBatchSizeTooSmall, wantText: "Batch size must be at least 1"},
		{name: "epochs zero", in: "model_name: m\nnum_epochs: 0\n", wantErr: ErrInvalidConfig},
		{name: "epochs 101", in: "model_name: m\nnum_epochs: 101\n", wantErr: ErrInvalidConfig},
		{name: "epochs 100 ok", in: "model_name: m\nnum_epochs: 100\n", want: func() *TrainingConfig {
			c := def
			c.ModelName, c.NumEpochs = "m", 100
			return &c
		}()},
		{name: "warmup over 1", in: "model_name: m\nwarmup_ratio: 1.5\n", wantErr: ErrInvalidConfig},
		{name: "negative save_total_limit", in: "model_name: m\nsave_total_limit: -1\n", wantErr: ErrInvalidConfig},
		{name: "fp16 alone turns bf16 off", in: "model_name: m\nfp16: true\n", want: func() *TrainingConfig {
			c := def
			c.ModelName, c.FP16, c.BF16 = "m", true, false
			return &c
		}()},
		{name: "fp16 and bf16 both set", in: "model_name: m\nfp16: true\nbf16: true\n", wantErr: ErrInvalidConfig},
		{name: "optim sgd", in: "model_name: m\noptim: sgd\noptim_args: momentum=0.9,nesterov=true\n", want: func() *TrainingConfig {
			c := def
			c.ModelName, c.Optim, c.OptimArgs = "m", "sgd", "momentum=0.9,nesterov=true"
			return &c
		}()},
		{name: "optim adafactor", in: "model_name: m\noptim: adafactor\n", want: func() *TrainingConfig {
			c := def
			c.ModelName, c.Optim = "m", "adafactor"
			return &c
		}()},
		{name: "unknown optim", in: "model_name: m\noptim: lion\n", wantErr: ErrInvalidConfig, wantText: `invalid config: optim: "lion" is not supported (supported: adamw_torch, adamw_torch_fused, adamw_hf, sgd, adafactor)`},
		{name: "optim_args unknown key", in: "model_name: m\noptim: sgd\noptim_args: betas=0.9\n", wantErr: ErrInvalidConfig},
		{name: "optim_args on adamw", in: "model_name: m\noptim_args: momentum=0.9\n", wantErr: ErrInvalidConfig},
		{name: "optim_args not a number", in: "model_name: m\noptim: sgd\noptim_args: momentum=lots\n", wantErr: ErrInvalidConfig},
		{name: "wsd with decay steps", in: "model_name: m\nlr_scheduler_type: warmup_stable_decay\nlr_scheduler_kwargs: {num_decay_steps: 10, decay_type: linear}\n", want: func() *TrainingConfig {
			c := def
			c.ModelName, c.LRSchedulerType = "m", "warmup_stable_decay"
			c.LRSchedulerKwargs = map[string]any{"num_decay_steps": 10.0, "decay_type": "linear"}
			return &c
		}()},
		{name: "wsd without decay steps", in: "model_name: m\nlr_scheduler_type: warmup_stable_decay\n", wantErr: ErrInvalidConfig},
		{name: "min lr without min_lr", in: "model_name: m\nlr_scheduler_type: cosine_with_min_lr\n", wantErr: ErrInvalidConfig},
		{name: "min lr with both", in: "model_name: m\nlr_scheduler_type: cosine_with_min_lr\nlr_scheduler_kwargs: {min_lr: 1e-6, min_lr_rate: 0.1}\n", wantErr: ErrInvalidConfig},
		{name: "min lr rate", in: "model_name: m\nlr_scheduler_type: cosine_with_min_lr\nlr_scheduler_kwargs: {min_lr_rate: 0.1}\n", want: func() *TrainingConfig {
			c := def
			c.ModelName, c.LRSchedulerType = "m", "cosine_with_min_lr"
			c.LRSchedulerKwargs = map[string]any{"min_lr_rate": 0.1}
			return &c
		}()},
		{name: "kwarg the scheduler does not take", in: "model_name: m\nlr_scheduler_type: linear\nlr_scheduler_kwargs: {power: 2}\n", wantErr: ErrInvalidConfig},
		{name: "plateau mode", in: "model_name: m\nlr_scheduler_type: reduce_lr_on_plateau\nlr_scheduler_kwargs: {mode: sideways}\n", wantErr: ErrInvalidConfig},
		{name: "unknown scheduler", in: "model_name: m\nlr_scheduler_type: wavy\n", wantErr: ErrInvalidConfig},
		{name: "grad accum zero", in: "model_name: m\ngradient_accumulation_steps: 0\n", wantErr: ErrInvalidConfig},
		{name: "negative weight decay", in: "model_name: m\nweight_decay: -0.1\n", wantErr: ErrInvalidConfig},
		{name: "zero logging steps", in: "model_name: m\nlogging_steps: 0\n", wantErr: ErrInvalidConfig},
		{name: "unknown key", in: "model_name: m\nepochs: 3\n", wantErr: ErrInvalidConfig},
		{name: "wrong case key", in: "Model_Name: m\n", wantErr: ErrInvalidConfig},
		{name: "wrong type", in: "model_name: m\nnum_epochs: three\n", wantErr: ErrInvalidConfig},
		{name: "fractional int", in: `{"model_name":"m","num_epochs":2.5}`, wantErr: ErrInvalidConfig},
		{name: "not a mapping", in: "- a\n- b\n", wantErr: ErrInvalidConfig},
		{name: "bad yaml", in: "model_name: [\n", wantErr: ErrInvalidConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseTrainingConfig([]byte(tt.in))
			if (err != nil) != (tt.wantErr != nil) || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) {
				t.Fatalf("ParseTrainingConfig() error = %v, wantErr %v", err, tt.wantErr)
			}
			if tt.wantText != "" && err.Error() != tt.wantText {
				t.Fatalf("error text %q, want exactly %q", err.Error(), tt.wantText)
			}
			if tt.want != nil && !reflect.DeepEqual(got, *tt.want) {
				t.Fatalf("got %+v\nwant %+v", got, *tt.want)
			}
		})
	}
}

func TestTrainingConfigValidateNaN(t *testing.T) {
	c := DefaultTrainingConfig()
	c.ModelName = "m"
	c.LearningRate = math.NaN()
	if err := c.Validate(); err != ErrLearningRateNotPositive {
		t.Fatalf("NaN learning rate: got %v", err)
	}
	c = DefaultTrainingConfig()
	c.ModelName = "m"
	c.WarmupRatio = math.NaN()
	if err := c.Validate(); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("NaN warmup: got %v", err)
	}
}

func TestParseLoraConfig(t *testing.T) {
	def := DefaultLoraConfig()
	tests := []struct {
		name    string
		in      string
		want    *LoraConfig
		wantErr error
	}{
		{name: "defaults", in: "", want: &def},
		{name: "json defaults", in: `{}`, want: &def},
		{name: "overrides", in: "r: 16\nlora_alpha: 32\ntarget_modules: [q_proj, v_proj]\nbias: lora_only\n",
			want: &LoraConfig{R: 16, LoraAlpha: 32, LoraDropout: 0.05, TargetModules: []string{"q_proj", "v_proj"}, Bias: "lora_only", TaskType: "CAUSAL_LM"}},
		{name: "null modules keep default", in: "target_modules: null\n", want: &def},
		{name: "rank zero", in: "r: 0\n", wantErr: ErrInvalidConfig},
		{name: "dropout one", in: "lora_dropout: 1\n", wantErr: ErrInvalidConfig},
		{name: "negative dropout", in: "lora_dropout: -0.1\n", wantErr: ErrInvalidConfig},
		{name: "empty modules", in: "target_modules: []\n", wantErr: ErrInvalidConfig},
		{name: "duplicate modules", in: "target_modules: [q_proj, q_proj]\n", wantErr: ErrInvalidConfig},
		{name: "bad bias", in: "bias: some\n", wantErr: ErrInvalidConfig},
		{name: "unknown key", in: "rank: 4\n", wantErr: ErrInvalidConfig},
		{name: "sequence classification", in: "task_type: SEQ_CLS\n", wantErr: ErrInvalidConfig},
		{name: "empty task type", in: "task_type: \"\"\n", wantErr: ErrInvalidConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseLoraConfig([]byte(tt.in))
			if (err != nil) != (tt.wantErr != nil) || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) {
				t.Fatalf("ParseLoraConfig() error = %v, wantErr %v", err, tt.wantErr)
			}
			if tt.want != nil && !reflect.DeepEqual(got, *tt.want) {
				t.Fatalf("got %+v\nwant %+v", got, *tt.want)
			}
		})
	}
	if s := def.Scaling(); s != 2 {
		t.Fatalf("Scaling() = %v, want 2", s)
	}
}

// TestTrainingLimits: each size a run takes has an upper limit, refused as
// a LimitError worded like §7.1 with the field in Param and the limit in
// Limit; the limit itself is accepted.
func TestTrainingLimits(t *testing.T) {
	tests := []struct {
		name      string
		parse     func([]byte) error
		in        string
		wantParam string
		wantLimit int
		wantText  string
	}{
		{name: "batch at the limit", parse: parseTraining, in: "model_name: m\nper_device_batch_size: 4096\n"},
		{name: "batch over the limit", parse: parseTraining, in: "model_name: m\nper_device_batch_size: 4097\n",
			wantParam: "per_device_batch_size", wantLimit: MaxPerDeviceBatchSize, wantText: "Invalid per_device_batch_size: 4097 is over the limit of 4096"},
		{name: "batch 1e8", parse: parseTraining, in: "model_name: m\nper_device_batch_size: 100000000\n",
			wantParam: "per_device_batch_size", wantLimit: MaxPerDeviceBatchSize, wantText: "Invalid per_device_batch_size: 100000000 is over the limit of 4096"},
		{name: "accumulation at the limit", parse: parseTraining, in: "model_name: m\ngradient_accumulation_steps: 65536\n"},
		{name: "accumulation over the limit", parse: parseTraining, in: "model_name: m\ngradient_accumulation_steps: 65537\n",
			wantParam: "gradient_accumulation_steps", wantLimit: MaxGradientAccumulationSteps, wantText: "Invalid gradient_accumulation_steps: 65537 is over the limit of 65536"},
		{name: "rank at the limit", parse: parseLora, in: "r: 256\n"},
		{name: "rank over the limit", parse: parseLora, in: "r: 257\n",
			wantParam: "lora.r", wantLimit: MaxLoraRank, wantText: "Invalid lora.r: 257 is over the limit of 256"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.parse([]byte(tt.in))
			if tt.wantParam == "" {
				if err != nil {
					t.Fatalf("error %v, want none", err)
				}
				return
			}
			var le *LimitError
			if !errors.As(err, &le) || !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("error %v, want a LimitError matching ErrInvalidConfig", err)
			}
			if le.Param != tt.wantParam || le.Limit != tt.wantLimit || err.Error() != tt.wantText {
				t.Fatalf("param %q limit %d text %q, want %q %d %q", le.Param, le.Limit, err.Error(), tt.wantParam, tt.wantLimit, tt.wantText)
			}
		})
	}
}

func parseTraining(b []byte) error { _, err := ParseTrainingConfig(b); return err }
func parseLora(b []byte) error     { _, err := ParseLoraConfig(b); return err }

func TestParseExperts(t *testing.T) {
	code := ExpertConfig{Name: "code", ModelPath: "models/code", Description: "Code expert", Domains: []string{"programming"},
		Keywords: []string{"python", "go"}, Priority: 2, MaxTokens: 4096, Endpoint: "http://localhost:8001"}
	minimal := ExpertConfig{Name: "general", ModelPath: "models/general", Domains: []string{}, Keywords: []string{}, MaxTokens: 2048}
	tests := []struct {
		name    string
		in      string
		want    []ExpertConfig
		wantErr error
	}{
		{name: "list", in: "- name: code\n  model_path: models/code\n  description: Code expert\n  domains: [programming]\n  keywords: [python, go]\n  priority: 2\n  max_tokens: 4096\n  endpoint: http://localhost:8001\n- name: general\n  model_path: models/general\n",
			want: []ExpertConfig{code, minimal}},
		{name: "experts key", in: "experts:\n  - name: general\n    model_path: models/general\n    endpoint: null\n", want: []ExpertConfig{minimal}},
		{name: "json", in: `{"experts":[{"name":"general","model_path":"models/general"}]}`, want: []ExpertConfig{minimal}},
		{name: "empty", in: "", wantErr: ErrInvalidConfig},
		{name: "other top key", in: "models: []\n", wantErr: ErrInvalidConfig},
		{name: "duplicate names", in: "- {name: a, model_path: p}\n- {name: a, model_path: q}\n", wantErr: ErrInvalidConfig},
		{name: "no name", in: "- {model_path: p}\n", wantErr: ErrInvalidConfig},
		{name: "dotted name", in: "- {name: a.b, model_path: p}\n", wantErr: ErrInvalidConfig},
		{name: "no path", in: "- {name: a}\n", wantErr: ErrInvalidConfig},
		{name: "dotdot path", in: "- {name: a, model_path: ../x}\n", wantErr: ErrInvalidModelPath},
		{name: "zero max tokens", in: "- {name: a, model_path: p, max_tokens: 0}\n", wantErr: ErrInvalidConfig},
		{name: "unknown key", in: "- {name: a, model_path: p, weight: 3}\n", wantErr: ErrInvalidConfig},
		{name: "not a list", in: "experts: a\n", wantErr: ErrInvalidConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseExperts([]byte(tt.in))
			if (err != nil) != (tt.wantErr != nil) || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) {
				t.Fatalf("ParseExperts() error = %v, wantErr %v", err, tt.wantErr)
			}
			if tt.want != nil && !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadConfigs(t *testing.T) {
	tc, err := LoadTrainingConfig(writeFile(t, "train.yaml", "model_name: m\nnum_epochs: 1\n"))
	if err != nil || tc.NumEpochs != 1 || tc.PerDeviceBatchSize != 4 {
		t.Fatalf("LoadTrainingConfig = %+v, %v", tc, err)
	}
	if _, err := LoadTrainingConfig(writeFile(t, "bad.json", `{"learning_rate":0,"model_name":"m"}`)); !errors.Is(err, ErrLearningRateNotPositive) {
		t.Fatalf("LoadTrainingConfig bad: %v", err)
	}
	if _, err := LoadTrainingConfig(filepath.Join(t.TempDir(), "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("LoadTrainingConfig missing: %v", err)
	}
	lc, err := LoadLoraConfig(writeFile(t, "lora.yaml", "r: 4\n"))
	if err != nil || lc.R != 4 || lc.LoraAlpha != 16 {
		t.Fatalf("LoadLoraConfig = %+v, %v", lc, err)
	}
	es, err := LoadExperts(writeFile(t, "experts.yaml", "experts:\n- {name: a, model_path: p}\n"))
	if err != nil || len(es) != 1 || es[0].MaxTokens != 2048 {
		t.Fatalf("LoadExperts = %+v, %v", es, err)
	}
	if _, err := LoadExperts(writeFile(t, "bad.yaml", "- {name: a}\n")); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("LoadExperts bad: %v", err)
	}
}

func FuzzParseTrainingConfig(f *testing.F) {
	for _, s := range []string{
		"model_name: m\n", `{"model_name":"m","num_epochs":2}`, "", "- a\n", "model_name: [\n",
		"model_name: m\nlearning_rate: 2e-5\nwarmup_ratio: .5\nfp16: yes\nbf16: no\n",
		"model_name: m\nnum_epochs: 1e3\n", "model_name: ..\n", "model_name: m\nfoo: 1\n",
		"model_name: &a m\noutput_dir: *a\n", "model_name: m\nlearning_rate: .nan\n", "model_name: m\nlearning_rate: .inf\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseTrainingConfig(data)
		if err != nil {
			if !errors.Is(err, ErrInvalidConfig) && !errors.Is(err, ErrModelNameRequired) && !errors.Is(err, ErrInvalidModelPath) &&
				!errors.Is(err, ErrLearningRateNotPositive) && !errors.Is(err, ErrBatchSizeTooSmall) {
				t.Fatalf("error %v matches no sentinel", err)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("parsed config does not validate: %v", err)
		}
	})
}

func ExampleParseTrainingConfig() {
	c, err := ParseTrainingConfig([]byte("model_name: models/stories260K\nnum_epochs: 1\nlearning_rate: 1e-4\n"))
	if err != nil {
		panic(err)
	}
	fmt.Println(c.ModelName, c.NumEpochs, c.LearningRate, c.PerDeviceBatchSize, c.LRSchedulerType)

	_, err = ParseTrainingConfig([]byte("model_name: m\nlearning_rate: 0\n"))
	fmt.Println(err)
	// Output:
	// models/stories260K 1 0.0001 4 cosine
	// Learning rate must be positive
}
