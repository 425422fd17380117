package schemas

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseRunConfig(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		wantErr error
	}{
		{name: "dataset", yaml: "base_model: m\ndataset: d\noutput_dir: o\nlearning_rate: 0.001\n"},
		{name: "files", yaml: "method: sft\nbase_model: m\ndata_files: [a.jsonl]\noutput_dir: o\nnum_epochs: 1\n"},
		{name: "lora", yaml: "base_model: m\ndataset: d\noutput_dir: o\nlora:\n  r: 4\n"},
		{name: "bad lora", yaml: "base_model: m\ndataset: d\noutput_dir: o\nlora:\n  r: 0\n", wantErr: ErrInvalidConfig},
		{name: "bad eval split", yaml: "base_model: m\ndataset: d\noutput_dir: o\neval_split: 1\n", wantErr: ErrInvalidConfig},
		{name: "dpo", yaml: "method: dpo\nbase_model: m\ndataset: d\noutput_dir: o\nbeta: 0.2\n"},
		{name: "bad beta", yaml: "method: dpo\nbase_model: m\ndataset: d\noutput_dir: o\nbeta: -1\n", wantErr: ErrInvalidConfig},
		{name: "unknown method", yaml: "method: ppo\nbase_model: m\ndataset: d\noutput_dir: o\n", wantErr: ErrInvalidConfig},
		{name: "no data", yaml: "base_model: m\noutput_dir: o\n", wantErr: ErrInvalidConfig},
		{name: "both data", yaml: "base_model: m\ndataset: d\ndata_files: [a]\noutput_dir: o\n", wantErr: ErrInvalidConfig},
		{name: "no output", yaml: "base_model: m\ndataset: d\n", wantErr: ErrInvalidConfig},
		{name: "bad lr", yaml: "base_model: m\ndataset: d\noutput_dir: o\nlearning_rate: 0\n", wantErr: ErrLearningRateNotPositive},
		{name: "unknown key", yaml: "base_model: m\ndataset: d\noutput_dir: o\nlearnin_rate: 1\n", wantErr: ErrInvalidConfig},
		{name: "packing and chat template", yaml: "base_model: m\ndataset: d\noutput_dir: o\npacking: true\nprompt_template: chat\n"},
		{name: "alpaca template", yaml: "base_model: m\ndataset: d\noutput_dir: o\nprompt_template: alpaca\n"},
		{name: "unknown template", yaml: "base_model: m\ndataset: d\noutput_dir: o\nprompt_template: vicuna\n", wantErr: ErrInvalidConfig},
		{name: "native engine", yaml: "base_model: m\ndataset: d\noutput_dir: o\nengine: native\n"},
		{name: "graph engine", yaml: "base_model: m\ndataset: d\noutput_dir: o\nengine: graph\n"},
		{name: "unknown engine", yaml: "base_model: m\ndataset: d\noutput_dir: o\nengine: tpu\n", wantErr: ErrInvalidConfig},
		{name: "lora bias and dropout", yaml: "base_model: m\ndataset: d\noutput_dir: o\nlora:\n  bias: lora_only\n  lora_dropout: 0.1\n"},
		{name: "dataset path", yaml: "base_model: m\ndataset: ../etc\noutput_dir: o\n", wantErr: ErrInvalidDatasetName},
		{name: "dataset with a dot", yaml: "base_model: m\ndataset: a.b\noutput_dir: o\n", wantErr: ErrInvalidDatasetName},
		{name: "dataset with a space", yaml: "base_model: m\ndataset: a b\noutput_dir: o\n", wantErr: ErrInvalidDatasetName},
		{name: "huge batch", yaml: "base_model: m\ndataset: d\noutput_dir: o\nper_device_batch_size: 100000000\n", wantErr: ErrInvalidConfig},
		{name: "huge accumulation", yaml: "base_model: m\ndataset: d\noutput_dir: o\ngradient_accumulation_steps: 100000\n", wantErr: ErrInvalidConfig},
		{name: "huge rank", yaml: "base_model: m\ndataset: d\noutput_dir: o\nlora:\n  r: 1024\n", wantErr: ErrInvalidConfig},
		{name: "model_name alone", yaml: "model_name: m\ndataset: d\noutput_dir: o\n"},
		{name: "model_name and alias agree", yaml: "model_name: m\nbase_model: m\ndataset: d\noutput_dir: o\n"},
		{name: "model_name and alias differ", yaml: "model_name: m\nbase_model: n\ndataset: d\noutput_dir: o\n", wantErr: ErrInvalidConfig},
		{name: "no model", yaml: "dataset: d\noutput_dir: o\n", wantErr: ErrModelNameRequired},
		{name: "unknown optim", yaml: "model_name: m\ndataset: d\noutput_dir: o\noptim: lion\n", wantErr: ErrInvalidConfig},
		{name: "plateau without evaluation", yaml: "model_name: m\ndataset: d\noutput_dir: o\nlr_scheduler_type: reduce_lr_on_plateau\neval_split: 0\n", wantErr: ErrInvalidConfig},
		{name: "plateau with the default split", yaml: "model_name: m\ndataset: d\noutput_dir: o\nlr_scheduler_type: reduce_lr_on_plateau\n"},
		{name: "plateau under dpo", yaml: "method: dpo\nmodel_name: m\ndataset: d\noutput_dir: o\nlr_scheduler_type: reduce_lr_on_plateau\n", wantErr: ErrInvalidConfig},
		{name: "dpo with eval_split", yaml: "method: dpo\nmodel_name: m\ndataset: d\noutput_dir: o\neval_split: 0.2\n", wantErr: ErrInvalidConfig},
		{name: "seq cls lora", yaml: "model_name: m\ndataset: d\noutput_dir: o\nlora:\n  task_type: SEQ_CLS\n", wantErr: ErrInvalidConfig},
		{name: "fp16 alone", yaml: "model_name: m\ndataset: d\noutput_dir: o\nfp16: true\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rc, err := ParseRunConfig([]byte(tc.yaml))
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if rc.Training.ModelName != "m" || rc.Model() != "m" || rc.Training.PerDeviceBatchSize != 4 || rc.MaxSeqLength != 0 {
				t.Errorf("defaults not applied: %+v", rc)
			}
			if wantSplit := map[string]float64{"sft": DefaultEvalSplit, "dpo": 0}[rc.Method]; !strings.Contains(tc.yaml, "eval_split") && rc.EvalSplit != wantSplit {
				t.Errorf("eval_split %v, want the default %v for %s", rc.EvalSplit, wantSplit, rc.Method)
			}
		})
	}
}

// trainJobJSON is a training job as the bus carried it before TrainJob
// moved here: the run's own fields under "run", the TrainingConfig and the
// LoraConfig beside them.
const trainJobJSON = `{"job":"train_1","run":{"method":"sft","base_model":"/b","dataset":"","data_dir":"","data_files":["/d"],` +
	`"format":"","max_seq_length":64,"seed":42,"resume":false,"eval_split":0.1,"beta":0.1,"packing":false,"prompt_template":""},` +
	`"training":{"model_name":"/b","output_dir":"/o","num_epochs":1,"per_device_batch_size":1,"gradient_accumulation_steps":1,` +
	`"learning_rate":0.001,"weight_decay":0,"warmup_ratio":0,"max_grad_norm":1,"fp16":false,"bf16":true,"optim":"adamw_torch",` +
	`"lr_scheduler_type":"cosine","save_steps":1,"save_total_limit":0,"logging_steps":1,"eval_steps":1},` +
	`"lora":{"r":8,"lora_alpha":16,"lora_dropout":0.05,"target_modules":["q_proj","v_proj"],"bias":"none","task_type":"CAUSAL_LM"}}`

// TestTrainJobWire: a training job decodes from and encodes to the same
// bytes, the run config whole (its Training and LoRA included).
func TestTrainJobWire(t *testing.T) {
	j, err := DecodeTrainJob([]byte(trainJobJSON))
	if err != nil {
		t.Fatal(err)
	}
	if j.Job != "train_1" || j.Run.Model() != "/b" || j.Run.Training.OutputDir != "/o" || j.Run.LoRA == nil || j.Run.LoRA.R != 8 {
		t.Fatalf("decoded %+v", j)
	}
	got, err := j.Encode()
	if err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	if err := json.Compact(&want, []byte(trainJobJSON)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Errorf("encoded\n%s\nwant\n%s", got, want.Bytes())
	}
	again, err := DecodeTrainJob(got)
	if err != nil || !reflect.DeepEqual(again, j) {
		t.Errorf("round trip: %+v, %v", again, err)
	}
}

func TestDecodeTrainJob(t *testing.T) {
	tests := []struct {
		name    string
		data    string
		wantErr error
	}{
		{name: "not json", data: `{`, wantErr: ErrBadTrainJob},
		{name: "no job", data: strings.Replace(trainJobJSON, `"job":"train_1",`, "", 1), wantErr: ErrBadTrainJob},
		{name: "bad job id", data: `{"job":"a.b"}`, wantErr: ErrBadTrainJob},
		{name: "invalid run", data: `{"job":"train_1","run":{"method":"sft"}}`, wantErr: ErrInvalidConfig},
		{name: "invalid training", data: strings.Replace(trainJobJSON, `"learning_rate":0.001`, `"learning_rate":0`, 1), wantErr: ErrLearningRateNotPositive},
		{name: "no lora", data: strings.Replace(trainJobJSON, trainJobJSON[strings.Index(trainJobJSON, `,"lora"`):len(trainJobJSON)-1], "", 1)},
		{name: "valid", data: trainJobJSON},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j, err := DecodeTrainJob([]byte(tt.data))
			if tt.wantErr == nil {
				if err != nil {
					t.Fatal(err)
				}
				if tt.name == "no lora" && j.Run.LoRA != nil {
					t.Errorf("lora %+v, want none", j.Run.LoRA)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) || !errors.Is(err, ErrBadTrainJob) {
				t.Errorf("err %v, want %v and ErrBadTrainJob", err, tt.wantErr)
			}
		})
	}
}

// FuzzDecodeTrainJob: any bytes from the bus decode to a valid job or an
// ErrBadTrainJob, never a panic.
func FuzzDecodeTrainJob(f *testing.F) {
	f.Add([]byte(trainJobJSON))
	f.Add([]byte(`{"job":"x","training":{"num_epochs":-1},"lora":{"r":0}}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		j, err := DecodeTrainJob(data)
		if err != nil {
			if !errors.Is(err, ErrBadTrainJob) {
				t.Fatalf("error does not wrap ErrBadTrainJob: %v", err)
			}
			return
		}
		if err := j.Run.Validate(); err != nil {
			t.Fatalf("decoded an invalid config: %v", err)
		}
	})
}
