package resultsink

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/parquet-go/parquet-go"

	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/schemas"
	"github.com/largeforge/largeforge/storage"
)

// Replays. `largeforge dlq replay` of a dead-lettered request reopens its
// ended job (jobs.Store.Reopen, listing the custom_id in Job.Replaying),
// runs the request again and publishes its result on lf.res.<job> with the
// header HeaderReplay. The sink lets such a result replace the request's
// error row, and nothing else: only a custom_id the job lists as replaying,
// once. The row goes into a new part; one compare-and-set on the record
// moves the custom_id from Replaying to Replaced and the count from failed
// to the new row's outcome. A job is not finalised while a replay is
// outstanding; the merge then keeps the last row of a replaced custom_id
// instead of the first, and writes the final objects again (each replaced
// whole when its new version is stored: the old ones stay readable until
// then).

// HeaderReplay marks a result that replays a dead-lettered request (its
// value: the dead letter's sequence in LF_DLQ).
const HeaderReplay = schemas.HeaderReplay

// ErrUnexpectedReplay: a replay result for a custom_id its job does not
// list as replaying.
var ErrUnexpectedReplay = errors.New("replay not expected")

// publishRows stores rows as the job's next part.
func publishRows(ctx context.Context, parts *storage.Parts, rows []Row) (storage.Info, error) {
	return parts.Publish(ctx, func(w io.Writer) error {
		pw := parquet.NewGenericWriter[Row](w, pqOpts...)
		if _, err := pw.Write(rows); err != nil {
			return err
		}
		return pw.Close()
	})
}

// replace takes the replay results out of bj and stores those the job
// expects (see above); a replay it does not expect gets an Invalid error in
// errs, one already stored (a redelivery) is dropped.
func (s *Sink) replace(ctx context.Context, j jobs.Job, st *jobState, bj *batchJob, errs []error) error {
	var rows []Row
	keep := 0
	for k, r := range bj.results {
		if !bj.replay[k] {
			bj.results[keep], bj.ridx[keep], bj.replay[keep] = r, bj.ridx[k], false
			keep++
			continue
		}
		switch {
		case slices.Contains(j.Replaying, r.CustomID) && !slices.ContainsFunc(rows, func(x Row) bool { return x.CustomID == r.CustomID }):
			rows = append(rows, r)
		case slices.Contains(j.Replaced, r.CustomID):
			s.log.Debug().Str("job", j.ID).Str("custom_id", r.CustomID).Msg("replay stored before; dropped")
		default:
			errs[bj.ridx[k]] = pipeline.Invalid("replay not expected", fmt.Errorf("%w: job %s custom_id %q", ErrUnexpectedReplay, j.ID, r.CustomID))
		}
	}
	bj.results, bj.ridx, bj.replay = bj.results[:keep], bj.ridx[:keep], bj.replay[:keep]
	if len(rows) == 0 {
		return nil
	}
	if _, err := publishRows(ctx, st.parts, rows); err != nil {
		return fmt.Errorf("job %s: write replay part: %w", j.ID, err)
	}
	nj, err := s.store.Update(ctx, j.ID, func(jj *jobs.Job) error {
		changed := false
		for _, r := range rows {
			i := slices.Index(jj.Replaying, r.CustomID)
			if i < 0 {
				continue // another sink stored it first; the merge keeps the last row
			}
			jj.Replaying = slices.Delete(jj.Replaying, i, i+1)
			jj.Replaced = append(jj.Replaced, r.CustomID)
			c := &jj.RequestCounts
			c.Failed = max(c.Failed-1, 0) // the error row it replaces
			if r.Failed() {
				c.Failed++
			} else {
				c.Completed++
			}
			changed = true
		}
		if !changed {
			return jobs.ErrSkip
		}
		return nil
	})
	if err != nil {
		s.forget(j.ID) // counts read again from the parts at the redelivery
		return err
	}
	for _, r := range rows {
		st.failed = max(st.failed-1, 0)
		st.count(r.Failed())
	}
	s.log.Info().Str("job", j.ID).Int("rows", len(rows)).Int("replaying", len(nj.Replaying)).Msg("replayed rows stored")
	return nil
}

// rowPos is a row's place in a job's parts: the part's index and the row's.
type rowPos struct{ part, row int }

// lastRows finds the last row of each replaced custom_id in the parts.
func (s *Sink) lastRows(ctx context.Context, list []storage.Info, replaced []string) (map[[16]byte]rowPos, error) {
	want := map[[16]byte]bool{}
	for _, id := range replaced {
		want[jobs.IDHash(id)] = true
	}
	last := map[[16]byte]rowPos{}
	for pi, p := range list {
		ri := 0
		if err := readParquet(ctx, s.files, p.Key, func(r idRow) {
			if h := jobs.IDHash(r.CustomID); want[h] {
				last[h] = rowPos{pi, ri}
			}
			ri++
		}); err != nil {
			return nil, fmt.Errorf("read part %s: %w", p.Key, err)
		}
	}
	return last, nil
}
