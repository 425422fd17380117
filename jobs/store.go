package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/largeforge/largeforge/pipeline"
)

// maxCASAttempts bounds the retries of one Update.
const maxCASAttempts = 100

// Store keeps Job records in a key-value bucket (lf_jobs).
type Store struct {
	kv  *pipeline.KV
	now func() time.Time
}

// NewStore wraps the lf_jobs bucket.
func NewStore(kv *pipeline.KV) (*Store, error) {
	if kv == nil {
		return nil, fmt.Errorf("%w: nil key-value bucket", ErrInvalidOption)
	}
	return &Store{kv: kv, now: time.Now}, nil
}

// Open opens the job store of bus (the lf_jobs bucket).
func Open(ctx context.Context, bus *pipeline.Bus) (*Store, error) {
	if bus == nil {
		return nil, fmt.Errorf("%w: nil bus", ErrInvalidOption)
	}
	kv, err := bus.KV(ctx, pipeline.BucketJobs)
	if err != nil {
		return nil, err
	}
	return NewStore(kv)
}

// Create stores a new job built from spec and returns it. Errors wrap
// ErrInvalidOption for a bad spec and ErrExists when the id is taken.
func (s *Store) Create(ctx context.Context, spec Spec) (Job, error) {
	j, err := NewJob(spec, s.now())
	if err != nil {
		return Job{}, err
	}
	data, err := json.Marshal(j)
	if err != nil {
		return Job{}, err
	}
	rev, err := s.kv.Create(ctx, j.ID, data)
	if err != nil {
		if errors.Is(err, pipeline.ErrKeyExists) {
			return Job{}, fmt.Errorf("%w: %s", ErrExists, j.ID)
		}
		return Job{}, fmt.Errorf("create job %s: %w", j.ID, err)
	}
	j.Revision = rev
	return j, nil
}

// Get reads a job; errors wrap ErrNotFound when there is none.
func (s *Store) Get(ctx context.Context, id string) (Job, error) {
	if err := ValidID(id); err != nil {
		return Job{}, err
	}
	e, err := s.kv.Get(ctx, id)
	if err != nil {
		if errors.Is(err, pipeline.ErrKeyNotFound) {
			return Job{}, fmt.Errorf("%w: %s", ErrNotFound, id)
		}
		return Job{}, fmt.Errorf("get job %s: %w", id, err)
	}
	return decodeEntry(e)
}

func decodeEntry(e pipeline.Entry) (Job, error) {
	var j Job
	if err := json.Unmarshal(e.Value, &j); err != nil {
		return Job{}, fmt.Errorf("%w: job %s: %v", ErrBadMessage, e.Key, err)
	}
	j.Revision = e.Revision
	return j, nil
}

// Update reads the job, applies f and writes it back only if nobody wrote it
// in between (compare-and-set on the revision), retrying on conflict. f may be
// called several times; it returns an error to abandon the update (that error
// is returned as it is). ErrSkip from f ends the update without writing and
// without error.
func (s *Store) Update(ctx context.Context, id string, f func(j *Job) error) (Job, error) {
	for range maxCASAttempts {
		j, err := s.Get(ctx, id)
		if err != nil {
			return Job{}, err
		}
		if err := f(&j); err != nil {
			if errors.Is(err, ErrSkip) {
				return j, nil
			}
			return j, err
		}
		data, err := json.Marshal(j)
		if err != nil {
			return Job{}, err
		}
		rev, err := s.kv.Update(ctx, id, data, j.Revision)
		if err == nil {
			j.Revision = rev
			return j, nil
		}
		if !errors.Is(err, pipeline.ErrWrongRevision) {
			return Job{}, fmt.Errorf("update job %s: %w", id, err)
		}
		if ctx.Err() != nil {
			return Job{}, ctx.Err()
		}
	}
	return Job{}, fmt.Errorf("%w: job %s after %d attempts", ErrConflict, id, maxCASAttempts)
}

// ErrSkip, returned by an Update function, ends the update without a write.
var ErrSkip = errors.New("skip update")

// Transition moves a job to status to (see CanTransition); edit, when not
// nil, changes the record in the same write. Moving to the status the job
// already has is not an error and writes nothing.
func (s *Store) Transition(ctx context.Context, id string, to Status, edit func(j *Job)) (Job, error) {
	return s.Update(ctx, id, func(j *Job) error {
		if j.Status == to {
			return ErrSkip
		}
		if err := j.SetStatus(to, s.now()); err != nil {
			return err
		}
		if edit != nil {
			edit(j)
		}
		return nil
	})
}

// Fail moves a job to failed with a report.
func (s *Store) Fail(ctx context.Context, id string, report ErrorReport) (Job, error) {
	return s.Transition(ctx, id, StatusFailed, func(j *Job) { j.AddError(report) })
}

// SetCounts sets a job's completed and failed counts (absolute values: the
// results sink counts the unique rows it holds), never lowering them.
func (s *Store) SetCounts(ctx context.Context, id string, completed, failed int) (Job, error) {
	return s.Update(ctx, id, func(j *Job) error {
		c := &j.RequestCounts
		if completed <= c.Completed && failed <= c.Failed {
			return ErrSkip
		}
		c.Completed, c.Failed = max(c.Completed, completed), max(c.Failed, failed)
		return nil
	})
}

// AddCounts adds to a job's completed and failed counts.
func (s *Store) AddCounts(ctx context.Context, id string, completed, failed int) (Job, error) {
	return s.Update(ctx, id, func(j *Job) error {
		j.RequestCounts.Completed += completed
		j.RequestCounts.Failed += failed
		return nil
	})
}

// List returns every job, newest first.
func (s *Store) List(ctx context.Context) ([]Job, error) {
	// Job ids are one token; a job's custom_ids (IDsKey) are keys of
	// several, which the filter leaves on the server.
	entries, err := s.kv.Values(ctx, "*")
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	out := make([]Job, 0, len(entries))
	for _, e := range entries {
		j, err := decodeEntry(e)
		if err != nil {
			return nil, err
		}
		out = append(out, j)
	}
	sort.Slice(out, func(a, b int) bool {
		if out[a].CreatedAt != out[b].CreatedAt {
			return out[a].CreatedAt > out[b].CreatedAt
		}
		return out[a].ID < out[b].ID
	})
	return out, nil
}

// Watch calls f with the job each time it changes, until f returns false, the
// job is terminal, or ctx ends; it returns the last record seen.
func (s *Store) Watch(ctx context.Context, id string, f func(Job) bool) (Job, error) {
	w, err := s.kv.Watch(ctx, id)
	if err != nil {
		return Job{}, fmt.Errorf("watch job %s: %w", id, err)
	}
	defer w.Stop()
	var last Job
	seen := false
	for {
		e, err := w.Next(ctx)
		switch {
		case errors.Is(err, pipeline.ErrWatchClosed):
			return last, fmt.Errorf("watch job %s: closed", id)
		case err != nil:
			return last, err
		case e == nil: // initial values delivered
			if !seen {
				return last, fmt.Errorf("%w: %s", ErrNotFound, id)
			}
			continue
		case e.Deleted:
			return last, fmt.Errorf("%w: %s (deleted)", ErrNotFound, id)
		}
		j, err := decodeEntry(*e)
		if err != nil {
			return last, err
		}
		last, seen = j, true
		if !f(j) || j.Status.Terminal() {
			return last, nil
		}
	}
}
