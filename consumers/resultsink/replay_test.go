package resultsink_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/largeforge/largeforge/consumers/resultsink"
	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/schemas"
)

// A replay replaces the error row of the custom_id its reopened job lists
// as replaying, and nothing else: a replay of another custom_id and an
// unmarked result for the replaying one are dead-lettered; the replayed row
// wins the merge, the counts move from failed to completed, and the job
// completes again.
func TestSinkReplayReplacesOnlyTheErrorRow(t *testing.T) {
	e := newEnv(t)
	e.start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	j := e.create(t, jobs.Spec{Model: "m"}, "a", "b")
	if _, err := e.store.Transition(ctx, j.ID, jobs.StatusInProgress, func(jj *jobs.Job) { jj.RequestCounts.Total = 2 }); err != nil {
		t.Fatal(err)
	}
	e.publish(t, ok(t, j.ID, "a", "old a"), "a1")
	e.publish(t, schemas.ErrorResult(j.ID, "b", "m", jobs.KindCompletion, 0, schemas.CodeDeadLetter, "worker died"), "b1")
	done := e.waitStatus(t, j.ID, jobs.StatusCompleted)
	if done.RequestCounts.Completed != 1 || done.RequestCounts.Failed != 1 {
		t.Fatalf("before the replay: %+v", done.RequestCounts)
	}
	if _, err := e.store.Reopen(ctx, j.ID, done.Revision, jobs.StatusInProgress, func(jj *jobs.Job) {
		jj.Replaying = []string{"b"}
		jj.Finalizer, jj.FinalizerUntil = "", 0
	}); err != nil {
		t.Fatal(err)
	}
	replay := func(r schemas.Result, msgID string) {
		t.Helper()
		data, _ := json.Marshal(r)
		hdr := pipeline.Header{}
		hdr.Set(resultsink.HeaderReplay, "7")
		if _, err := e.bus.Publish(ctx, "lf.res."+j.ID, data, msgID, hdr); err != nil {
			t.Fatal(err)
		}
	}
	replay(ok(t, j.ID, "a", "forged a"), "a2")         // not replaying
	e.publish(t, ok(t, j.ID, "b", "unmarked b"), "b2") // no replay mark
	pipelinetest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		recs := pipelinetest.DLQRecords(t, e.bus, "lf.dlq.results."+j.ID)
		var reasons []string
		for _, r := range recs {
			reasons = append(reasons, r.Reason)
		}
		slices.Sort(reasons)
		if !slices.Equal(reasons, []string{"duplicate result", "replay not expected"}) {
			return fmt.Errorf("dead letters %q", reasons)
		}
		return nil
	})
	if got, err := e.store.Get(ctx, j.ID); err != nil || got.Status != jobs.StatusInProgress {
		t.Fatalf("finalised while a replay is outstanding: %+v, %v", got, err)
	}
	replay(ok(t, j.ID, "b", "new b"), "b3")
	var again jobs.Job
	pipelinetest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		var err error
		if again, err = e.store.Get(ctx, j.ID); err != nil {
			return err
		}
		if again.Status != jobs.StatusCompleted || again.RequestCounts.Completed != 2 || again.RequestCounts.Failed != 0 {
			return fmt.Errorf("job %s %+v", again.Status, again.RequestCounts)
		}
		return nil
	})
	lines, err := resultsink.ReadOutput(filepath.Join(again.Outputs.LocalDir, resultsink.FileOutput))
	if err != nil || len(lines) != 2 {
		t.Fatalf("output: %+v, %v", lines, err)
	}
	for _, l := range lines {
		body := string(l.Response.Body)
		if l.Error != nil || (l.CustomID == "a" && !strings.Contains(body, "old a")) || (l.CustomID == "b" && !strings.Contains(body, "new b")) {
			t.Fatalf("output line %s: %s %+v", l.CustomID, body, l.Error)
		}
	}
	if errs, err := resultsink.ReadOutput(filepath.Join(again.Outputs.LocalDir, resultsink.FileErrors)); err != nil || len(errs) != 0 {
		t.Fatalf("errors.jsonl: %+v, %v", errs, err)
	}
}
