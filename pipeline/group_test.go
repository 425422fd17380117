package pipeline_test

import (
	"context"
	"errors"
	"testing"

	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

func TestGroup(t *testing.T) {
	errA, errB := errors.New("a"), errors.New("b")
	tests := []struct {
		name    string
		results []error // what each goroutine returns once the group stops
		wantErr error
	}{
		{"none", nil, nil},
		{"all succeed", []error{nil, nil, nil}, nil},
		{"one fails", []error{nil, errA, nil}, errA},
		{"the first failure wins", []error{errA, errB}, errA},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := pipeline.NewGroup(context.Background())
			// Each goroutine waits for the group's context, then for its
			// predecessor, so the failures come in order.
			prev := make(chan struct{})
			close(prev)
			for _, res := range tt.results {
				done := make(chan struct{})
				before := prev
				g.Go(func(ctx context.Context) error {
					defer close(done)
					<-ctx.Done()
					<-before
					return res
				})
				prev = done
			}
			g.Stop()
			if err := g.Wait(); !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
				t.Fatalf("Wait = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestGroupEndsWithItsParent(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	g := pipeline.NewGroup(ctx)
	g.Go(func(ctx context.Context) error { <-ctx.Done(); return nil })
	cancel()
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	if g.Context().Err() == nil {
		t.Fatal("the group's context is still alive after Wait")
	}
}

func TestGroupConsumes(t *testing.T) {
	_, b := pipelinetest.StartBus(t)
	c := newConsumer(t, b, fastConfig(), pipeline.PerMessage(func(context.Context, pipeline.Msg) error { return nil }))
	g := pipeline.NewGroup(context.Background())
	g.Consume(c, 2)
	g.Stop()
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
}
