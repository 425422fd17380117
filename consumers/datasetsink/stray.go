package datasetsink

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/largeforge/largeforge/dataset"
	"github.com/largeforge/largeforge/pipeline"
)

// ErrStraySubject: a message on LF_DATASETS whose subject is not
// lf.data.<dataset>.raw or lf.data.<dataset>.shard with a valid dataset name.
var ErrStraySubject = errors.New("stray subject")

// Stray subjects are dead-lettered by their own durable consumer on all of
// lf.data.>, under lf.dlq.StageStray.StrayToken: a publish no stage handles
// (lf.data.a.b.raw, lf.data.x.y, a dataset named "*") is never stored
// silently, nor taken for a dataset of some other name.
const (
	DurableStrays = "dataset-strays"
	StageStray    = "stray"
	StrayToken    = "data"
)

// datasetOf returns the dataset of a subject lf.data.<ds>.raw|shard, or an
// error wrapping ErrStraySubject.
func datasetOf(subject string) (string, error) {
	p := strings.Split(subject, ".")
	if len(p) != 4 || p[0] != "lf" || p[1] != "data" || (p[3] != "raw" && p[3] != "shard") {
		return "", fmt.Errorf("%w: %q is not lf.data.<dataset>.raw or lf.data.<dataset>.shard", ErrStraySubject, subject)
	}
	if err := dataset.ValidateName(p[2]); err != nil {
		return "", fmt.Errorf("%w: %q: %w", ErrStraySubject, subject, err)
	}
	return p[2], nil
}

// strayHandler acks the messages other consumers handle and dead-letters
// the rest.
type strayHandler struct{}

func (strayHandler) Handle(_ context.Context, msgs []pipeline.Msg) []error {
	errs := make([]error, len(msgs))
	for i, m := range msgs {
		if _, err := datasetOf(m.Subject); err != nil {
			errs[i] = pipeline.Invalid("stray subject", err)
		}
	}
	return errs
}

// NewStrayConsumer returns the consumer that dead-letters stray subjects of
// LF_DATASETS; run it beside the sink's.
func NewStrayConsumer(ctx context.Context, bus *pipeline.Bus, log zerolog.Logger) (*pipeline.Consumer, error) {
	return pipeline.NewConsumer(ctx, bus, pipeline.ConsumerConfig{Stream: pipeline.StreamDatasets, Durable: DurableStrays,
		FilterSubjects: []string{"lf.data.>"}, Stage: StageStray, Batch: 256, MaxWait: 300 * time.Millisecond, AckWait: 15 * time.Second,
		DLQToken: func(string) string { return StrayToken }}, strayHandler{}, log)
}
