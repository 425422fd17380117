package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/largeforge/largeforge/pipeline"
)

// ReopenStatuses are the end states Reopen takes a job out of: a replay of
// what was dead-lettered gives a failed or completed job another attempt.
var ReopenStatuses = []Status{StatusFailed, StatusCompleted}

// Reopen moves a job that ended (failed or completed) back to status to
// (validating for a training job's new attempt, in_progress for a batch job
// whose failed request is replayed) by one compare-and-set on its record: it
// writes only when the record still has revision rev and one of
// ReopenStatuses, so two replays, or a replay racing a finalizer, reopen it
// once. edit, when not nil, changes the record in the same write. Errors
// wrap ErrNotFound, ErrIllegalTransition (not ended, or to is no open
// state) and ErrConflict (the record changed since rev: read it again).
func (s *Store) Reopen(ctx context.Context, id string, rev uint64, to Status, edit func(j *Job)) (Job, error) {
	if to != StatusValidating && to != StatusInProgress {
		return Job{}, fmt.Errorf("%w: job %s: reopen to %s (want validating or in_progress)", ErrIllegalTransition, id, to)
	}
	j, err := s.Get(ctx, id)
	if err != nil {
		return Job{}, err
	}
	if j.Revision != rev {
		return Job{}, fmt.Errorf("%w: job %s changed (revision %d, read at %d)", ErrConflict, id, j.Revision, rev)
	}
	if !slices.Contains(ReopenStatuses, j.Status) {
		return Job{}, fmt.Errorf("%w: job %s is %s, not ended: nothing to reopen", ErrIllegalTransition, id, j.Status)
	}
	now := s.now().Unix()
	j.Status = to
	j.FailedAt, j.CompletedAt = 0, 0
	if to == StatusInProgress {
		j.InProgressAt = now
		// A new attempt gets a new window: the old one may be over.
		j.ExpiresAt = max(j.ExpiresAt, now+int64(DefaultCompletionWindow/time.Second))
	}
	if edit != nil {
		edit(&j)
	}
	data, err := json.Marshal(j)
	if err != nil {
		return Job{}, err
	}
	nrev, err := s.kv.Update(ctx, id, data, rev)
	if errors.Is(err, pipeline.ErrWrongRevision) {
		return Job{}, fmt.Errorf("%w: reopen job %s: %w", ErrConflict, id, err)
	}
	if err != nil {
		return Job{}, fmt.Errorf("reopen job %s: %w", id, err)
	}
	j.Revision = nrev
	return j, nil
}
