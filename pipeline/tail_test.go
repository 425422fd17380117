package pipeline_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

// Tail returns the newest messages of one subject, oldest first, across a
// stream where other subjects' messages interleave and outnumber them.
func TestTail(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, b := pipelinetest.StartBus(t)
	for i := range 60 {
		job := "other"
		if i%10 == 0 {
			job = "mine"
		}
		subj, _ := pipeline.RouteSubject(job)
		if _, err := b.Publish(ctx, subj, fmt.Appendf(nil, "%s-%d", job, i), fmt.Sprint(i), nil); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		filter string
		limit  int
		want   []string
	}{
		{"lf.route.mine", 2, []string{"mine-40", "mine-50"}},
		{"lf.route.mine", 100, []string{"mine-0", "mine-10", "mine-20", "mine-30", "mine-40", "mine-50"}},
		{"lf.route.>", 3, []string{"other-57", "other-58", "other-59"}},
		{"lf.route.none", 5, nil},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s/%d", tc.filter, tc.limit), func(t *testing.T) {
			msgs, err := b.Tail(ctx, pipeline.StreamRoutes, tc.filter, tc.limit)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for i, m := range msgs {
				got = append(got, string(m.Data))
				if i > 0 && m.Seq <= msgs[i-1].Seq {
					t.Errorf("sequence %d after %d", m.Seq, msgs[i-1].Seq)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
	// Tail leaves no consumer behind.
	st, err := b.JetStream().Stream(ctx, pipeline.StreamRoutes)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Consumers != 0 {
		t.Errorf("%d consumers left on %s", info.State.Consumers, pipeline.StreamRoutes)
	}
	if _, err := b.Tail(ctx, pipeline.StreamRoutes, "lf.route.>", 0); !errors.Is(err, pipeline.ErrInvalidOption) {
		t.Errorf("limit 0: %v, want ErrInvalidOption", err)
	}
}
