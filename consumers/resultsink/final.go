package resultsink

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/parquet-go/parquet-go"
	"github.com/rs/zerolog"

	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/storage"
)

// errNotFinalizer: the job has another finalizer (whose lease holds) or
// no longer needs one.
var errNotFinalizer = errors.New("not the job's finalizer")

// claim makes this sink the job's finalizer with a compare-and-set on its
// record: it takes the job when nobody holds it, when its finalizer's lease
// has run out, or when it holds it already (renewing the lease). With
// complete, an in_progress job whose counts reach its total moves to
// finalizing in the same write. It returns the record as claimed, or
// errNotFinalizer.
func (s *Sink) claim(ctx context.Context, id string, complete bool) (jobs.Job, error) {
	mine := false
	j, err := s.store.Update(ctx, id, func(j *jobs.Job) error {
		mine = false
		now := s.now()
		switch {
		case j.Status.Terminal() || j.Kind == jobs.KindTraining:
			return jobs.ErrSkip
		case j.Finalizer != "" && j.Finalizer != s.id && now.UnixMilli() < j.FinalizerUntil:
			return jobs.ErrSkip
		case j.Status == jobs.StatusInProgress && complete && len(j.Replaying) == 0 && j.RequestCounts.Done() >= j.RequestCounts.Total:
			if err := j.SetStatus(jobs.StatusFinalizing, now); err != nil {
				return err
			}
		case j.Status == jobs.StatusInProgress || j.Status == jobs.StatusValidating:
			if !s.expired(*j) {
				return jobs.ErrSkip
			}
		}
		j.Finalizer, j.FinalizerUntil = s.id, now.Add(s.lease).UnixMilli()
		mine = true
		return nil
	})
	if err != nil {
		return j, err
	}
	if !mine {
		return j, errNotFinalizer
	}
	return j, nil
}

// expired reports whether an unfinished job is past its completion window.
func (s *Sink) expired(j jobs.Job) bool { return j.ExpiresAt > 0 && s.now().Unix() > j.ExpiresAt }

// hold renews this sink's claim on a job it finalises every third of the
// lease until the function it returns is called, whatever the finalization
// is doing (reading parts, uploading a large file); the ctx it returns ends
// when the claim is lost (another sink took the job over), so that nothing
// more is stored under a claim that is not this sink's.
func (s *Sink) hold(ctx context.Context, job string) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(s.lease / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if err := s.renew(ctx, job); errors.Is(err, errNotFinalizer) {
				cancel(fmt.Errorf("job %s: %w", job, err))
				return
			} else if err != nil && ctx.Err() == nil {
				s.log.Warn().Err(err).Str("job", job).Msg("renew the finalizer's claim")
			}
		}
	}()
	return ctx, func() {
		close(done)
		<-stopped
		cancel(nil)
	}
}

// renew extends this sink's lease on a job it finalises; errNotFinalizer
// when another sink has taken it over meanwhile.
func (s *Sink) renew(ctx context.Context, id string) error {
	_, err := s.store.Update(ctx, id, func(j *jobs.Job) error {
		if j.Finalizer != s.id || j.Status.Terminal() {
			return errNotFinalizer
		}
		j.FinalizerUntil = s.now().Add(s.lease).UnixMilli()
		return nil
	})
	return err
}

// finalize writes the final files of a job this sink has claimed and ends
// it in status to (completed from finalizing, cancelled, expired): from its
// assembly when it has one (see Assembly), by a merge of the parts
// otherwise. A job to complete whose parts hold fewer distinct rows than its
// total (its counts went past the rows stored: a sink died between counting
// and acking, or two sinks stored one result) goes back to in_progress with
// its exact counts plus whatever was counted since the claim.
func (s *Sink) finalize(ctx context.Context, j jobs.Job, to jobs.Status) error {
	ctx, release := s.hold(ctx, j.ID)
	defer release()
	m, a, err := s.finalRows(ctx, j)
	if err != nil {
		return err
	}
	claimed := j.RequestCounts
	if to == jobs.StatusCompleted && m.completed+m.failed < j.RequestCounts.Total {
		if a != nil {
			s.reattach(j.ID, a)
		}
		_, err := s.store.Update(ctx, j.ID, func(jj *jobs.Job) error {
			if jj.Status != jobs.StatusFinalizing || jj.Finalizer != s.id {
				return jobs.ErrSkip
			}
			if err := jj.SetStatus(jobs.StatusInProgress, s.now()); err != nil {
				return err
			}
			c := &jj.RequestCounts
			c.Completed = m.completed + max(c.Completed-claimed.Completed, 0)
			c.Failed = m.failed + max(c.Failed-claimed.Failed, 0)
			jj.Finalizer, jj.FinalizerUntil = "", 0
			return nil
		})
		s.log.Info().Str("job", j.ID).Int("rows", m.completed+m.failed).Int("total", j.RequestCounts.Total).Msg("rows missing: job back in progress")
		return err
	}
	if a != nil {
		stores, _, err := s.finalTargets(j.ID)
		if err == nil {
			err = a.upload(ctx, j.ID, stores)
		}
		a.drop()
		if err != nil {
			return fmt.Errorf("job %s: write final files: %w", j.ID, err)
		}
	}
	if _, err = s.store.Transition(ctx, j.ID, to, func(jj *jobs.Job) {
		jj.Outputs = m.out
		jj.RequestCounts.Completed, jj.RequestCounts.Failed = m.completed, m.failed
		jj.FinalizerUntil = 0
	}); err != nil {
		return err
	}
	s.mu.Lock()
	s.forget(j.ID)
	s.mu.Unlock()
	s.log.Info().Str("job", j.ID).Dict("context", zerolog.Dict().Str("status", string(to)).Int("completed", m.completed).
		Int("failed", m.failed).Str("output_file", m.out.Output).Str("local_dir", m.out.LocalDir)).Msg("job finalised")
	return nil
}

// finalRows brings the job's final rows together: its assembly, detached
// and given the parts it has not met (the files then still to upload), or,
// without one, a merge of every part (the files then stored).
func (s *Sink) finalRows(ctx context.Context, j jobs.Job) (merged, *assembly, error) {
	a := s.detach(j.ID)
	if a == nil || len(j.Replaced) > 0 {
		if a != nil {
			a.drop()
		}
		m, err := s.merge(ctx, j.ID, j.Replaced)
		return m, nil, err
	}
	if err := s.catchUp(ctx, j.ID, a, false); err != nil {
		a.drop()
		return merged{}, nil, err
	}
	_, out, err := s.finalTargets(j.ID)
	if err != nil {
		a.drop()
		return merged{}, nil, err
	}
	return merged{out: out, completed: a.w.completed, failed: a.w.failed}, a, nil
}

// merged is what a merge wrote.
type merged struct {
	out               jobs.Outputs
	completed, failed int
}

// finalTargets are the stores that receive a job's final files (the
// artifact store, and the mirror when the sink has one) and the job's
// Outputs naming them.
func (s *Sink) finalTargets(job string) ([]storage.Store, jobs.Outputs, error) {
	out := jobs.Outputs{Output: storage.JobFile(job, FileOutput), Errors: storage.JobFile(job, FileErrors), Parquet: storage.JobFile(job, FileResults)}
	stores := []storage.Store{s.files}
	if s.mirror == nil {
		// A store of local files (tests, a sink on a directory) names its copy.
		if dir, err := s.files.Path(storage.Job(job)); err == nil {
			out.LocalDir = dir
		}
		return stores, out, nil
	}
	dir, err := s.mirror.Path(storage.Job(job))
	if err != nil {
		return nil, out, fmt.Errorf("job %s: %w", job, err)
	}
	out.LocalDir = dir
	return append(stores, s.mirror), out, nil
}

// mergeBatch is how many rows the merge reads from a part and hands the
// Parquet writer at once.
const mergeBatch = 256

// merge streams a job's parts, in number order, once, into its three final
// objects (and their local mirror), keeping the first row of each
// custom_id (the last of a replaced one: see replace). Memory: one batch of
// rows, the Parquet writer's row group (rowGroupRows rows), the writers'
// buffers and 16 bytes (plus map overhead) per distinct custom_id.
func (s *Sink) merge(ctx context.Context, job string, replaced []string) (merged, error) {
	stores, out, err := s.finalTargets(job)
	m := merged{out: out}
	if err != nil {
		return m, err
	}
	parts, err := storage.JobParts(s.files, job)
	if err != nil {
		return m, err
	}
	list, err := parts.List(ctx)
	if err != nil {
		return m, fmt.Errorf("job %s: list parts: %w", job, err)
	}
	var last map[[16]byte]rowPos
	if len(replaced) > 0 {
		if last, err = s.lastRows(ctx, list, replaced); err != nil {
			return m, fmt.Errorf("job %s: %w", job, err)
		}
	}
	keys := finalKeys(job)
	var targets []target
	for _, st := range stores {
		for _, k := range keys {
			targets = append(targets, target{st, k})
		}
	}
	err = putTogether(ctx, targets, func(ws []io.Writer) error {
		w := ws[:len(keys)]
		if len(ws) > len(keys) {
			w = make([]io.Writer, len(keys))
			for i := range keys {
				w[i] = io.MultiWriter(ws[i], ws[len(keys)+i])
			}
		}
		fw := newFinalWriter(w)
		for pi, p := range list {
			ri := 0
			if err := readParquetBatches(ctx, s.files, p.Key, func(rows []Row) error {
				keep := rows[:0:0]
				for _, r := range rows {
					pos := rowPos{pi, ri}
					ri++
					if at, ok := last[jobs.IDHash(r.CustomID)]; ok && at != pos {
						continue // a replaced row
					}
					keep = append(keep, r)
				}
				return fw.write(keep)
			}); err != nil {
				return fmt.Errorf("read part %s: %w", p.Key, err)
			}
		}
		m.completed, m.failed = fw.completed, fw.failed
		return fw.close()
	})
	if err != nil {
		return m, fmt.Errorf("job %s: write final files: %w", job, err)
	}
	return m, nil
}

// target is one object a merge writes.
type target struct {
	files storage.Store
	key   string
}

// errWrittenOnce: a store called a final file's write function twice
// (storage.Mirror does); the sink mirrors final files itself.
var errWrittenOnce = errors.New("final files are streamed once: give the sink its mirror (WithMirror), not a storage.Mirror")

// putTogether stores every target at once from one pass of fill, which
// gets their writers in order: each Put streams (an object store's chunks
// go out as fill writes), so nothing is held whole. When fill fails or any
// Put does, every Put fails and none stores a partial object.
func putTogether(ctx context.Context, targets []target, fill func([]io.Writer) error) error {
	type ready struct {
		i int
		w io.Writer // nil: the Put ended without asking for its bytes
	}
	readyc := make(chan ready, len(targets))
	done := make(chan struct{})
	var fillErr error
	errs := make([]error, len(targets))
	var wg sync.WaitGroup
	for i, t := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			called := false
			_, errs[i] = t.files.Put(ctx, t.key, func(w io.Writer) error {
				if called {
					return errWrittenOnce
				}
				called = true
				readyc <- ready{i, w}
				<-done
				return fillErr
			})
			if !called {
				readyc <- ready{i, nil}
			}
		}()
	}
	ws := make([]io.Writer, len(targets))
	for range targets {
		r := <-readyc
		if r.w == nil {
			fillErr = fmt.Errorf("put %s: %w", targets[r.i].key, errors.Join(errs[r.i], errors.New("ended before its bytes")))
			break
		}
		ws[r.i] = r.w
	}
	if fillErr == nil {
		fillErr = fill(ws)
	}
	close(done)
	wg.Wait()
	if fillErr != nil {
		return fillErr
	}
	return errors.Join(errs...)
}

// readParquetBatches streams the rows of a stored Parquet object in batches
// of mergeBatch; the slice is reused between calls.
func readParquetBatches[T any](ctx context.Context, files storage.Store, key string, each func([]T) error) error {
	f, info, err := files.Open(ctx, key)
	if err != nil {
		return err
	}
	defer f.Close()
	pf, err := parquet.OpenFile(f, info.Size)
	if err != nil {
		return err
	}
	r := parquet.NewGenericReader[T](pf)
	defer r.Close()
	buf := make([]T, mergeBatch)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := r.Read(buf)
		if n > 0 {
			if ferr := each(buf[:n]); ferr != nil {
				return ferr
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if n == 0 {
			return nil
		}
	}
}
