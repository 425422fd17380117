package pipeline_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/largeforge/largeforge/pipeline"
)

func TestUnanswered(t *testing.T) {
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"deadline", fmt.Errorf("check stream LF_TRAIN: %w", context.DeadlineExceeded), true},
		{"no responders", nats.ErrNoResponders, true},
		{"timeout", nats.ErrTimeout, true},
		{"no stream response", jetstream.ErrNoStreamResponse, true},
		{"cluster unavailable", &jetstream.APIError{ErrorCode: 10008, Code: 503}, true},
		{"topology missing", pipeline.ErrTopologyMissing, false},
		{"stream not found", jetstream.ErrStreamNotFound, false},
		{"other", errors.New("permissions violation"), false},
	} {
		if got := pipeline.Unanswered(c.err); got != c.want {
			t.Errorf("%s: Unanswered(%v) = %v, want %v", c.name, c.err, got, c.want)
		}
	}
}
