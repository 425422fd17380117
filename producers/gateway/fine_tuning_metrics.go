package gateway

import (
	"context"

	"github.com/rs/zerolog"

	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/schemas"
)

// trainEvent is a training event of LF_EVENTS with its stream sequence.
type trainEvent struct {
	seq uint64
	schemas.TrainEvent
}

// trainEvents reads job's last MaxFineTuningEvents training events, oldest
// first; a message that is not one is skipped with a warning.
func (ft *fineTuning) trainEvents(ctx context.Context, job string, l zerolog.Logger) ([]trainEvent, error) {
	filter, err := pipeline.TrainEventSubject(job)
	if err != nil {
		return nil, err
	}
	msgs, err := ft.g.bus.Tail(ctx, pipeline.StreamEvents, filter, MaxFineTuningEvents)
	if err != nil {
		return nil, err
	}
	out := make([]trainEvent, 0, len(msgs))
	for _, m := range msgs {
		e, err := schemas.DecodeTrainEvent(m.Data)
		if err != nil {
			l.Warn().Err(err).Uint64("seq", m.Seq).Msg("training event skipped")
			continue
		}
		out = append(out, trainEvent{seq: m.Seq, TrainEvent: e})
	}
	return out, nil
}

// stepMetrics are the metrics of each step the events hold, as OpenAI's
// checkpoint metrics name them: step, train_loss (the step's), and where
// the step was evaluated valid_loss and valid_mean_token_accuracy. A step
// repeated by a resumed attempt keeps its newest values.
func stepMetrics(evs []trainEvent) map[int]map[string]any {
	out := map[int]map[string]any{}
	for _, e := range evs {
		m := out[e.GlobalStep]
		if m == nil {
			m = map[string]any{"step": e.GlobalStep}
			out[e.GlobalStep] = m
		}
		switch {
		case e.Kind == schemas.TrainEventStep:
			m["train_loss"] = e.Loss
		case e.EvalLoss != nil:
			m["valid_loss"] = *e.EvalLoss
			if e.Accuracy != nil {
				m["valid_mean_token_accuracy"] = *e.Accuracy
			}
		}
	}
	return out
}
