package train_test

import (
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/largeforge/largeforge/consumers/train"
	"github.com/largeforge/largeforge/consumers/train/traintest"
	"github.com/largeforge/largeforge/schemas"
)

func TestMessageRoundTrip(t *testing.T) {
	fx := traintest.New(t, 2)
	rc, err := train.Resolve(fx.RunConfig(t, "rel/out", 1, 1))
	if err != nil {
		t.Fatal(err)
	}
	if !filepath.IsAbs(rc.Training.OutputDir) || !filepath.IsAbs(rc.BaseModel) {
		t.Fatalf("Resolve left relative paths: %s, %s", rc.Training.OutputDir, rc.BaseModel)
	}
	data, err := train.Message{Job: "train_1", Run: rc, Training: rc.Training, LoRA: rc.LoRA}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	m, err := train.DecodeMessage(data)
	if err != nil {
		t.Fatal(err)
	}
	got := m.RunConfig()
	if !reflect.DeepEqual(got.Training, rc.Training) || got.BaseModel != rc.BaseModel || got.MaxSeqLength != 64 || got.Training.LearningRate != 0.005 {
		t.Errorf("round trip: %+v", got)
	}
}

// TestResolveModelName: model_name alone selects the base model (made
// absolute); an empty one is "Model name required", one that is no model
// directory "Invalid model path", before anything is queued.
func TestResolveModelName(t *testing.T) {
	fx := traintest.New(t, 2)
	rc := fx.RunConfig(t, t.TempDir(), 1, 1)
	if rc.Training.ModelName != fx.Base || rc.Model() != fx.Base {
		t.Fatalf("model_name %q, Model() %q, want %q", rc.Training.ModelName, rc.Model(), fx.Base)
	}
	if _, err := train.Resolve(rc); err != nil {
		t.Fatalf("model_name alone: %v", err)
	}
	missing := rc.WithModel(filepath.Join(t.TempDir(), "no-such-model"))
	if _, err := train.Resolve(missing); !errors.Is(err, schemas.ErrInvalidModelPath) || !strings.HasPrefix(err.Error(), "Invalid model path") {
		t.Errorf("missing model: err %v, want Invalid model path", err)
	}
	dotdot := rc.WithModel(fx.Base + "/../base")
	if _, err := train.Resolve(dotdot); err == nil || err.Error() != "Invalid model path" {
		t.Errorf("model with ..: err %v, want exactly Invalid model path", err)
	}
	empty := rc.WithModel("")
	if _, err := train.Resolve(empty); err == nil || err.Error() != "Model name required" {
		t.Errorf("empty model: err %v, want exactly Model name required", err)
	}
}

func TestDecodeMessage(t *testing.T) {
	tests := []struct {
		name    string
		data    string
		wantErr bool
	}{
		{name: "not json", data: `{`, wantErr: true},
		{name: "no job", data: `{"run":{"method":"sft","base_model":"/b","data_files":["/d"],"max_seq_length":64},"training":{"output_dir":"/o"}}`, wantErr: true},
		{name: "bad job id", data: `{"job":"a.b"}`, wantErr: true},
		{name: "invalid config", data: `{"job":"train_1","run":{"method":"sft"}}`, wantErr: true},
		{name: "valid", data: `{"job":"train_1","run":{"method":"sft","base_model":"/b","data_files":["/d"],"max_seq_length":64,"beta":0.1},
			"training":{"model_name":"/b","output_dir":"/o","num_epochs":1,"per_device_batch_size":1,"gradient_accumulation_steps":1,
			"learning_rate":0.001,"max_grad_norm":1,"optim":"adamw_torch","lr_scheduler_type":"cosine","save_steps":1,"logging_steps":1,"eval_steps":1}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := train.DecodeMessage([]byte(tt.data))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, train.ErrBadMessage) {
				t.Errorf("error does not wrap ErrBadMessage: %v", err)
			}
		})
	}
}

// FuzzDecodeMessage: any bytes from the bus decode to a valid message or
// an ErrBadMessage, never a panic.
func FuzzDecodeMessage(f *testing.F) {
	f.Add([]byte(`{"job":"train_1","run":{"method":"sft","base_model":"/b","data_files":["/d"],"max_seq_length":64}}`))
	f.Add([]byte(`{"job":"x","training":{"num_epochs":-1},"lora":{"r":0}}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := train.DecodeMessage(data)
		if err != nil {
			if !errors.Is(err, train.ErrBadMessage) {
				t.Fatalf("error does not wrap ErrBadMessage: %v", err)
			}
			return
		}
		if err := m.RunConfig().Validate(); err != nil {
			t.Fatalf("decoded an invalid config: %v", err)
		}
	})
}
