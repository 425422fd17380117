package schemas

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// ErrBadTrainEvent is wrapped by DecodeTrainEvent for bytes that are not a
// training event.
var ErrBadTrainEvent = errors.New("bad training event")

// Kinds of TrainEvent.
const (
	TrainEventStep = "step" // an optimizer step (§5.1 names)
	TrainEventEval = "eval" // an evaluation of the eval split (§5.2 names)
)

// TrainEvent is one message of lf.events.train.<job> (stream LF_EVENTS): a
// training job's optimizer step or evaluation, in the training log's names.
// A step event carries loss, learning_rate, epoch, grad_norm and
// train_samples_per_second; an eval event eval_loss, perplexity and
// accuracy. A job resumed from a checkpoint repeats the events of the steps
// after that checkpoint (its Attempt tells them apart); Nats-Msg-Id is
// <job>/<attempt>/<kind>/<global_step>.
type TrainEvent struct {
	Job        string  `json:"job"`
	Kind       string  `json:"kind"` // TrainEventStep or TrainEventEval
	Attempt    int     `json:"attempt,omitempty"`
	GlobalStep int     `json:"global_step"`
	MaxSteps   int     `json:"max_steps,omitempty"`
	Epoch      float64 `json:"epoch"`
	Time       int64   `json:"time"` // Unix milliseconds

	Loss                  float64 `json:"loss,omitempty"`
	LearningRate          float64 `json:"learning_rate,omitempty"`
	GradNorm              float64 `json:"grad_norm,omitempty"`
	TrainSamplesPerSecond float64 `json:"train_samples_per_second,omitempty"`

	EvalLoss   *float64 `json:"eval_loss,omitempty"`
	Perplexity *float64 `json:"perplexity,omitempty"`
	Accuracy   *float64 `json:"accuracy,omitempty"`
}

// MsgID is the event's Nats-Msg-Id: <job>/<attempt>/<kind>/<global_step>.
func (e TrainEvent) MsgID() string {
	return fmt.Sprintf("%s/%d/%s/%d", e.Job, e.Attempt, e.Kind, e.GlobalStep)
}

// DecodeTrainEvent parses an event read from LF_EVENTS. It rejects unknown
// fields, an unknown kind, no job, a step below 1 and an eval event without
// eval_loss; errors wrap ErrBadTrainEvent.
func DecodeTrainEvent(data []byte) (TrainEvent, error) {
	var e TrainEvent
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		return TrainEvent{}, fmt.Errorf("%w: %w", ErrBadTrainEvent, err)
	}
	switch {
	case e.Job == "":
		return TrainEvent{}, fmt.Errorf("%w: no job", ErrBadTrainEvent)
	case e.Kind != TrainEventStep && e.Kind != TrainEventEval:
		return TrainEvent{}, fmt.Errorf("%w: kind %q", ErrBadTrainEvent, e.Kind)
	case e.GlobalStep < 1:
		return TrainEvent{}, fmt.Errorf("%w: global_step %d", ErrBadTrainEvent, e.GlobalStep)
	case e.Kind == TrainEventEval && e.EvalLoss == nil:
		return TrainEvent{}, fmt.Errorf("%w: eval event without eval_loss", ErrBadTrainEvent)
	}
	return e, nil
}
