package train_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/largeforge/largeforge/consumers/train"
	"github.com/largeforge/largeforge/consumers/train/traintest"
	"github.com/largeforge/largeforge/jobs"
	mtrain "github.com/largeforge/largeforge/model/train"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/schemas"
)

// A training job whose message is dead-lettered ends failed with the reason,
// never stuck in_progress or validating: a job out of deliveries because its
// worker stopped mid-run, one whose last delivery never finished (its worker
// died: the next delivery goes to the DLQ without reaching a handler), and a
// poison message.
func TestDeadLetteredTrainingJobFails(t *testing.T) {
	tests := []struct {
		name string
		// run submits job id and brings it to the DLQ.
		run      func(t *testing.T, bus *pipeline.Bus, store *jobs.Store, fx traintest.Fixture, id string)
		wantCode string
		wantMsg  string
	}{
		{
			name: "worker stopped on the last delivery",
			run: func(t *testing.T, bus *pipeline.Bus, store *jobs.Store, fx traintest.Fixture, id string) {
				stop := startWorker(t, bus, "a", train.Config{MaxDeliver: 1, DrainTimeout: time.Millisecond})
				if _, err := train.Submit(context.Background(), bus, store, fx.RunConfig(t, filepath.Join(fx.Dir, "out"), 100, 1000), id); err != nil {
					t.Fatal(err)
				}
				pipelinetest.CheckFor(t, 30*time.Second, 5*time.Millisecond, func() error {
					j, err := store.Get(context.Background(), id)
					if err == nil && (j.Training == nil || j.Training.Step == 0) {
						return errors.New("no step yet")
					}
					return err
				})
				stop()
			},
			wantCode: schemas.CodeDeadLetter,
			wantMsg:  "max deliveries exceeded",
		},
		{
			name: "worker died on the last delivery",
			run: func(t *testing.T, bus *pipeline.Bus, store *jobs.Store, fx traintest.Fixture, id string) {
				ctx := context.Background()
				// The workers' durable consumer, as train.Start makes it with MaxDeliver 1.
				filter, _ := pipeline.TrainFilter(pipeline.AnyToken)
				if _, err := pipeline.NewConsumer(ctx, bus, pipeline.ConsumerConfig{Stream: pipeline.StreamTrain, Durable: train.Durable,
					FilterSubjects: []string{filter}, Stage: train.Stage, Batch: 1, MaxAckPending: train.MaxConcurrentJobs,
					AckWait: train.DefaultAckWait, MaxDeliver: 1}, pipeline.PerMessage(func(context.Context, pipeline.Msg) error { return nil }),
					pipelinetest.Logger(t)); err != nil {
					t.Fatal(err)
				}
				if _, err := train.Submit(ctx, bus, store, fx.RunConfig(t, filepath.Join(fx.Dir, "out"), 1, 100), id); err != nil {
					t.Fatal(err)
				}
				// Delivery 1 "crashes": taken and given back without an outcome.
				raw, err := bus.JetStream().Consumer(ctx, pipeline.StreamTrain, train.Durable)
				if err != nil {
					t.Fatal(err)
				}
				batch, err := raw.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
				if err != nil {
					t.Fatal(err)
				}
				n := 0
				for m := range batch.Messages() {
					n++
					if err := m.Nak(); err != nil {
						t.Fatal(err)
					}
				}
				if n != 1 {
					t.Fatalf("fetched %d messages, want the job's", n)
				}
				startWorker(t, bus, "b", train.Config{MaxDeliver: 1})
			},
			wantCode: schemas.CodeDeadLetter,
			wantMsg:  "max deliveries exceeded: delivery 2 of 1: the previous attempt did not finish (after 2 deliveries)",
		},
		{
			name: "poison message",
			run: func(t *testing.T, bus *pipeline.Bus, store *jobs.Store, fx traintest.Fixture, id string) {
				ctx := context.Background()
				if _, err := store.Create(ctx, jobs.Spec{ID: id, Kind: jobs.KindTraining, Model: "out"}); err != nil {
					t.Fatal(err)
				}
				subj, _ := pipeline.TrainSubject(id)
				if _, err := bus.Publish(ctx, subj, []byte(`{"job":"`+id+`","run":{"method":"rl"}}`), id, nil); err != nil {
					t.Fatal(err)
				}
				startWorker(t, bus, "c", train.Config{})
			},
			wantCode: "invalid_config",
			wantMsg:  "method",
		},
		{
			name: "dataset without a data dir anywhere",
			run: func(t *testing.T, bus *pipeline.Bus, store *jobs.Store, fx traintest.Fixture, id string) {
				yaml := strings.Replace(fx.YAML(filepath.Join(fx.Dir, "out"), 1, 100), "data_files: ["+fx.Data+"]", "dataset: chat", 1)
				rc, err := mtrain.ParseRunConfig([]byte(yaml))
				if err != nil {
					t.Fatal(err)
				}
				if _, err := train.Submit(context.Background(), bus, store, rc, id); err != nil {
					t.Fatal(err)
				}
				startWorker(t, bus, "d", train.Config{})
			},
			wantCode: "invalid_config",
			wantMsg:  "dataset chat: no parts in lf_artifacts, and the job has no data_dir and worker d no data dir",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, bus := pipelinetest.StartBus(t)
			store := jobStore(t, bus)
			fx := traintest.New(t, 8)
			const id = "train_dead"
			tt.run(t, bus, store, fx, id)
			end := watch(t, store, id, 60*time.Second).wait(t)
			if end.Status != jobs.StatusFailed || end.FailedAt == 0 {
				t.Fatalf("job ended %s, want failed", end.Status)
			}
			if len(end.Errors) != 1 || end.Errors[0].Code != tt.wantCode || !strings.Contains(end.Errors[0].Message, tt.wantMsg) {
				t.Errorf("errors %+v, want one %s saying %q", end.Errors, tt.wantCode, tt.wantMsg)
			}
		})
	}
}
