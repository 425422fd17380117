package schemas

import (
	"encoding/json"
	"errors"
	"testing"
)

func TestDecodeTrainEvent(t *testing.T) {
	el := 1.5
	step := TrainEvent{Job: "j", Kind: TrainEventStep, Attempt: 1, GlobalStep: 3, Epoch: 0.5, Loss: 2, LearningRate: 1e-4, GradNorm: 0.3, TrainSamplesPerSecond: 12}
	eval := TrainEvent{Job: "j", Kind: TrainEventEval, GlobalStep: 4, Epoch: 1, EvalLoss: &el}
	enc := func(v any) string { b, _ := json.Marshal(v); return string(b) }
	tests := []struct {
		name    string
		in      string
		want    TrainEvent
		wantErr error
	}{
		{"step", enc(step), step, nil},
		{"eval", enc(eval), eval, nil},
		{"not json", `{`, TrainEvent{}, ErrBadTrainEvent},
		{"unknown field", `{"job":"j","kind":"step","global_step":1,"x":1}`, TrainEvent{}, ErrBadTrainEvent},
		{"no job", `{"kind":"step","global_step":1}`, TrainEvent{}, ErrBadTrainEvent},
		{"bad kind", `{"job":"j","kind":"log","global_step":1}`, TrainEvent{}, ErrBadTrainEvent},
		{"step 0", `{"job":"j","kind":"step","global_step":0}`, TrainEvent{}, ErrBadTrainEvent},
		{"eval without eval_loss", `{"job":"j","kind":"eval","global_step":2}`, TrainEvent{}, ErrBadTrainEvent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeTrainEvent([]byte(tc.in))
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err %v, want %v", err, tc.wantErr)
			}
			if err == nil && enc(got) != enc(tc.want) {
				t.Errorf("got %s, want %s", enc(got), enc(tc.want))
			}
		})
	}
	if id := step.MsgID(); id != "j/1/step/3" {
		t.Errorf("msg id %q", id)
	}
}

func FuzzDecodeTrainEvent(f *testing.F) {
	f.Add([]byte(`{"job":"j","kind":"step","global_step":1,"loss":2}`))
	f.Add([]byte(`{"job":"j","kind":"eval","global_step":2,"eval_loss":1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := DecodeTrainEvent(data)
		if err != nil {
			if !errors.Is(err, ErrBadTrainEvent) {
				t.Fatalf("error %v does not wrap ErrBadTrainEvent", err)
			}
			return
		}
		again, err := DecodeTrainEvent([]byte(mustJSON(t, e)))
		if err != nil || again.MsgID() != e.MsgID() {
			t.Fatalf("re-decoding %+v: %v", e, err)
		}
	})
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
