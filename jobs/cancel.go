package jobs

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/schemas"
)

// Cancel moves a job to cancelling, purges its queued requests from
// LF_REQUESTS and tells the results sink (a schemas.ControlCancel marker on
// lf.res.<job>) to finalise what it has; the sink then moves the job to
// cancelled. Requests already running finish; their results are dropped once
// the job is cancelled. It returns the number of purged requests. A training
// job is only moved to cancelling: its worker stops and ends it cancelled.
func Cancel(ctx context.Context, bus *pipeline.Bus, store *Store, id string) (Job, uint64, error) {
	j, err := store.Transition(ctx, id, StatusCancelling, nil)
	if err != nil {
		return j, 0, fmt.Errorf("cancel job %s: %w", id, err)
	}
	if j.Kind == KindTraining { // the train worker stops at its next step and ends it cancelled
		return j, 0, nil
	}
	purged, err := PurgeRequests(ctx, bus, id)
	if err != nil {
		return j, 0, err
	}
	if err := PublishControl(ctx, bus, id, schemas.ControlCancel); err != nil {
		return j, purged, err
	}
	return j, purged, nil
}

// PurgeRequests removes the queued requests of a job (lf.req.<job>.>).
func PurgeRequests(ctx context.Context, bus *pipeline.Bus, id string) (uint64, error) {
	n, err := bus.Purge(ctx, pipeline.StreamRequests, "lf.req."+id+".>")
	if err != nil {
		return 0, fmt.Errorf("purge job %s: %w", id, err)
	}
	return n, nil
}

// PublishControl publishes a control marker (schemas.ControlSubmitted,
// schemas.ControlCancel) on lf.res.<job>.
func PublishControl(ctx context.Context, bus *pipeline.Bus, id, control string) error {
	subj, err := pipeline.ResultSubject(id)
	if err != nil {
		return err
	}
	data, err := json.Marshal(schemas.Result{Job: id, Control: control})
	if err != nil {
		return err
	}
	if _, err := bus.Publish(ctx, subj, data, id+"#"+control, nil); err != nil {
		return fmt.Errorf("job %s: %w", id, err)
	}
	return nil
}
