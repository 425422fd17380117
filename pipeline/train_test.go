package pipeline_test

import (
	"context"
	"errors"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

func TestTrainSubjects(t *testing.T) {
	tests := []struct {
		name    string
		f       func(string) (string, error)
		job     string
		want    string
		wantErr bool
	}{
		{name: "subject", f: pipeline.TrainSubject, job: "train_1", want: "lf.train.train_1"},
		{name: "subject rejects a wildcard", f: pipeline.TrainSubject, job: pipeline.AnyToken, wantErr: true},
		{name: "subject rejects a dot", f: pipeline.TrainSubject, job: "a.b", wantErr: true},
		{name: "filter", f: pipeline.TrainFilter, job: pipeline.AnyToken, want: "lf.train.*"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.f(tt.job)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, pipeline.ErrInvalidOption) {
				t.Errorf("error does not wrap ErrInvalidOption: %v", err)
			}
			if got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// TestTrainStreamIsWorkQueue: EnsureTopology declares LF_TRAIN as a work
// queue on lf.train.>, so a job's message is delivered to one worker.
func TestTrainStreamIsWorkQueue(t *testing.T) {
	_, bus := pipelinetest.StartBus(t)
	s, err := bus.JetStream().Stream(context.Background(), pipeline.StreamTrain)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	if cfg.Retention != jetstream.WorkQueuePolicy || len(cfg.Subjects) != 1 || cfg.Subjects[0] != "lf.train.>" {
		t.Errorf("LF_TRAIN: retention %v, subjects %v", cfg.Retention, cfg.Subjects)
	}
}
