package train_test

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/largeforge/largeforge/consumers/train"
	"github.com/largeforge/largeforge/consumers/train/traintest"
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
	if got.Training != rc.Training || got.BaseModel != rc.BaseModel || got.MaxSeqLength != 64 || got.Training.LearningRate != 0.005 {
		t.Errorf("round trip: %+v", got)
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
			"training":{"model_name":"m","output_dir":"/o","num_epochs":1,"per_device_batch_size":1,"gradient_accumulation_steps":1,
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
