package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"

	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/schemas"
)

// replayable is the job of a dead-lettered request to replay, and whether
// the request's replay is pending already (the job reopened for it, its
// result not come): a request is replayed once its job completed.
func replayable(ctx context.Context, store *jobs.Store, id, customID string) (jobs.Job, bool, error) {
	j, err := replayTarget(ctx, store, id)
	if err != nil {
		return j, false, err
	}
	pending := j.Status == jobs.StatusInProgress && slices.Contains(j.Replaying, customID)
	if !pending && j.Status != jobs.StatusCompleted {
		return j, false, fmt.Errorf("job %s is %s: a request is replayed once its job completed (largeforge jobs wait %s)", id, j.Status, id)
	}
	return j, pending, nil
}

// reopenFor reopens completed job j for the replay of customID by one
// compare-and-set on its record (in_progress, customID listed as
// replaying, no finalizer), unless that replay is pending already.
func reopenFor(ctx context.Context, store *jobs.Store, j jobs.Job, pending bool, customID string) error {
	if pending {
		return nil
	}
	_, err := store.Reopen(ctx, j.ID, j.Revision, jobs.StatusInProgress, func(jj *jobs.Job) {
		jj.Replaying = append(jj.Replaying, customID)
		jj.Finalizer, jj.FinalizerUntil = "", 0
	})
	return err
}

// replayScore queues a dead-lettered score request again (no RPC runs
// scores): its job is reopened by compare-and-set as for a completion, and
// the request goes back on lf.req.<job>.<model> marked with
// schemas.HeaderReplay under a msg id of its own (the duplicate window
// would drop it under its first one). An infer worker of the model scores
// it and publishes its result with the same mark, which lets the results
// sink replace the request's error row.
func replayScore(ctx context.Context, bus *pipeline.Bus, store *jobs.Store, seq uint64, id string, req schemas.Request, rec pipeline.DLQRecord) error {
	subj, err := pipeline.RequestSubject(id, req.Model)
	if err != nil {
		return err
	}
	j, pending, err := replayable(ctx, store, id, req.CustomID)
	if err != nil {
		return err
	}
	if err := reopenFor(ctx, store, j, pending, req.CustomID); err != nil {
		return err
	}
	hdr := pipeline.Header{}
	hdr.Set(schemas.HeaderReplay, strconv.FormatUint(seq, 10))
	if _, err := bus.Publish(ctx, subj, rec.Data, schemas.ReplayMsgID(schemas.MsgID(id, req.CustomID), strconv.FormatUint(seq, 10)), hdr); err != nil {
		return fmt.Errorf("queue it again on %s: %w", subj, err)
	}
	return nil
}
