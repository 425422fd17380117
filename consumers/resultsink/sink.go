// Package resultsink writes the results of batch jobs: it consumes
// lf.res.<job> and keeps, per job in storage (storage.JobParts; locally
// <data-dir>/jobs/<job>/parts/), Parquet parts of the rows as they arrive
// (one part per fetched batch, published whole before the batch is acked),
// exactly one row per custom_id whatever was redelivered (a
// storage.Deduper). When every request of a job has a row
// (completed+failed == total) it moves the job to finalizing, merges the parts
// into results.parquet, output.jsonl (the OpenAI batch output shape) and
// errors.jsonl, each stored whole, and completes the job. It also finalises cancelled jobs with what they have, expires jobs
// past their completion window, and turns the requests dead-lettered by the
// infer workers into error rows. Training jobs are not its business: their
// train worker runs their whole lifecycle, and the sink never writes their
// records.
package resultsink

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/parquet-go/parquet-go"
	"github.com/rs/zerolog"

	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/schemas"
	"github.com/largeforge/largeforge/storage"
)

var (
	// ErrInvalidOption is wrapped by constructor errors.
	ErrInvalidOption = errors.New("invalid results sink option")
	// ErrStraySubject: a message on LF_RESULTS whose subject is not
	// lf.res.<job> of the job it names.
	ErrStraySubject = errors.New("stray subject")
)

// The final files of a job (storage.JobFile).
const (
	FileOutput  = "output.jsonl"
	FileErrors  = "errors.jsonl"
	FileResults = "results.parquet"
)

// Sink writes the results of the jobs of a job store into an artifact store.
type Sink struct {
	files storage.Store
	store *jobs.Store
	log   zerolog.Logger
	now   func() time.Time

	mu   sync.Mutex
	open map[string]*jobState
}

type jobState struct {
	parts     *storage.Parts
	dedupe    storage.Deduper // the custom_ids the parts hold
	submitted jobs.IDSet      // the custom_ids the job submitted, loaded as results need them
	completed int
	failed    int
}

// New returns a sink writing the results of store's jobs into files.
func New(files storage.Store, store *jobs.Store, log zerolog.Logger) (*Sink, error) {
	if files == nil || store == nil {
		return nil, fmt.Errorf("%w: the sink needs an artifact store and a job store", ErrInvalidOption)
	}
	return &Sink{files: files, store: store, log: log.With().Str("logger", "largeforge.results-sink").Logger(), now: time.Now, open: map[string]*jobState{}}, nil
}

type idRow struct {
	CustomID  string  `parquet:"custom_id"`
	ErrorCode *string `parquet:"error_code,optional"`
}

// load returns a job's state, reading the ids of its parts the first time.
func (s *Sink) load(ctx context.Context, job string) (*jobState, error) {
	if st, ok := s.open[job]; ok {
		return st, nil
	}
	parts, err := storage.JobParts(s.files, job)
	if err != nil {
		return nil, err
	}
	st := &jobState{parts: parts, dedupe: storage.NewMemory()}
	list, err := parts.List(ctx)
	if err != nil {
		return nil, err
	}
	for _, p := range list {
		var ids []string
		var failed []bool
		if err := readParquet(ctx, s.files, p.Key, func(r idRow) {
			ids = append(ids, r.CustomID)
			failed = append(failed, r.ErrorCode != nil)
		}); err != nil {
			return nil, fmt.Errorf("job %s: read part %s: %w", job, p.Key, err)
		}
		fresh, err := st.dedupe.Claim(ctx, ids)
		if err != nil {
			return nil, fmt.Errorf("job %s: %w", job, err)
		}
		for i := range ids {
			if fresh[i] {
				st.count(failed[i])
			}
		}
	}
	s.open[job] = st
	return st, nil
}

// count counts one row.
func (st *jobState) count(failed bool) {
	if failed {
		st.failed++
	} else {
		st.completed++
	}
}

// readParquet streams the rows of a stored Parquet object.
func readParquet[T any](ctx context.Context, files storage.Store, key string, each func(T)) error {
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
	buf := make([]T, 256)
	for {
		n, err := r.Read(buf)
		for _, v := range buf[:n] {
			each(v)
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

var pqOpts = []parquet.WriterOption{parquet.Compression(&parquet.Zstd)}

// rowGroupRows is the row group size of results.parquet.
const rowGroupRows = 8192

// add writes the rows new to the job as one part and counts them. A row
// whose custom_id has a row already, or that would take the job's counts
// past room (when room >= 0), is refused: its rejected entry is set.
func (s *Sink) add(ctx context.Context, job string, st *jobState, results []Row, room int, rejected []error) (int, error) {
	ids := make([]string, len(results))
	for i, r := range results {
		ids[i] = r.CustomID
	}
	fresh, err := st.dedupe.Claim(ctx, ids)
	if err != nil {
		return 0, fmt.Errorf("job %s: %w", job, err)
	}
	var rows []Row
	var claimed, over []string
	for i, r := range results {
		switch {
		case !fresh[i]:
			rejected[i] = pipeline.Invalid("duplicate result", fmt.Errorf("%w: job %s custom_id %q", jobs.ErrDuplicateResult, job, r.CustomID))
		case room >= 0 && len(rows) >= room:
			over = append(over, r.CustomID)
			rejected[i] = pipeline.Invalid("results past the job's total", fmt.Errorf("%w: job %s custom_id %q: the job has all its results", jobs.ErrDuplicateResult, job, r.CustomID))
		default:
			rows = append(rows, r)
			claimed = append(claimed, r.CustomID)
		}
	}
	if err := st.dedupe.Release(ctx, over); err != nil {
		return 0, fmt.Errorf("job %s: %w", job, err)
	}
	if len(rows) == 0 {
		return 0, nil
	}
	if _, err := st.parts.Publish(ctx, func(w io.Writer) error {
		pw := parquet.NewGenericWriter[Row](w, pqOpts...)
		if _, err := pw.Write(rows); err != nil {
			return err
		}
		return pw.Close()
	}); err != nil {
		return 0, errors.Join(fmt.Errorf("job %s: write part: %w", job, err), st.dedupe.Release(ctx, claimed))
	}
	for _, r := range rows {
		st.count(r.Failed())
	}
	return len(rows), nil
}

type batchJob struct {
	idx     []int
	results []Row
	ridx    []int // the message of each result
	control bool
}

// Handle is the pipeline.Handler of lf.res.>.
func (s *Sink) Handle(ctx context.Context, msgs []pipeline.Msg) []error {
	errs := make([]error, len(msgs))
	byJob := map[string]*batchJob{}
	var order []string
	for i, m := range msgs {
		r, err := schemas.DecodeResult(m.Data)
		var row Row
		if err == nil && r.Control == "" {
			row, err = rowOf(r)
		}
		if err != nil {
			errs[i] = pipeline.Invalid("not a result", err)
			continue
		}
		if want, _ := pipeline.ResultSubject(r.Job); m.Subject != want {
			errs[i] = pipeline.Invalid("stray subject", fmt.Errorf("%w: a result of job %q on %s (want %s)", ErrStraySubject, r.Job, m.Subject, want))
			continue
		}
		bj := byJob[r.Job]
		if bj == nil {
			bj = &batchJob{}
			byJob[r.Job] = bj
			order = append(order, r.Job)
		}
		bj.idx = append(bj.idx, i)
		if r.Control != "" {
			bj.control = true
			continue
		}
		bj.results = append(bj.results, row)
		bj.ridx = append(bj.ridx, i)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, job := range order {
		bj := byJob[job]
		if err := s.handleJob(ctx, job, bj, errs); err != nil {
			s.log.Warn().Err(err).Str("job", job).Msg("results not stored; will retry")
			for _, i := range bj.idx {
				errs[i] = err
			}
		}
	}
	return errs
}

// handleJob stores the results of one job of a batch; a result it refuses
// (see screen) gets its Invalid error in errs and is dead-lettered.
func (s *Sink) handleJob(ctx context.Context, job string, bj *batchJob, errs []error) error {
	j, err := s.store.Get(ctx, job)
	if errors.Is(err, jobs.ErrNotFound) {
		for _, i := range bj.ridx {
			errs[i] = pipeline.Invalid("unknown job", err)
		}
		return nil
	}
	if err != nil {
		return err
	}
	if j.Kind == jobs.KindTraining {
		s.log.Warn().Str("job", job).Int("rows", len(bj.results)).Msg("results of a training job dropped: its train worker runs it")
		return nil
	}
	if j.Status.Terminal() {
		if len(bj.results) > 0 {
			s.log.Debug().Str("job", job).Str("status", string(j.Status)).Int("rows", len(bj.results)).Msg("results after the job ended dropped")
		}
		return nil
	}
	st, err := s.load(ctx, job)
	if err != nil {
		return err
	}
	results, idx, err := s.screen(ctx, job, st, bj, errs)
	if err != nil {
		return err
	}
	room := -1
	if j.Status == jobs.StatusInProgress {
		room = max(j.RequestCounts.Total-st.completed-st.failed, 0)
	}
	rejected := make([]error, len(results))
	if _, err := s.add(ctx, job, st, results, room, rejected); err != nil {
		return err
	}
	for k, e := range rejected {
		if e != nil {
			errs[idx[k]] = e
		}
	}
	if j.RequestCounts.Completed != st.completed || j.RequestCounts.Failed != st.failed {
		if j, err = s.store.SetCounts(ctx, job, st.completed, st.failed); err != nil {
			return err
		}
	}
	return s.settle(ctx, j, st)
}

// screen returns the results of bj whose custom_id the job submitted (with
// their message indices), reading the job's recorded custom_ids again when
// one is not known yet (its chunk may be newer than what was loaded); each
// other result gets an Invalid error wrapping jobs.ErrUnknownID in errs.
func (s *Sink) screen(ctx context.Context, job string, st *jobState, bj *batchJob, errs []error) ([]Row, []int, error) {
	for _, r := range bj.results {
		if !st.submitted.Has(r.CustomID) {
			if err := s.store.LoadIDs(ctx, job, &st.submitted); err != nil {
				return nil, nil, err
			}
			break
		}
	}
	var rows []Row
	var idx []int
	for k, r := range bj.results {
		if !st.submitted.Has(r.CustomID) {
			errs[bj.ridx[k]] = pipeline.Invalid("unknown custom_id", fmt.Errorf("%w: job %s custom_id %q", jobs.ErrUnknownID, job, r.CustomID))
			continue
		}
		rows, idx = append(rows, r), append(idx, bj.ridx[k])
	}
	return rows, idx, nil
}

// settle finalises a job that is complete, cancelling or finalizing.
func (s *Sink) settle(ctx context.Context, j jobs.Job, st *jobState) error {
	switch {
	case j.Status == jobs.StatusCancelling:
		return s.finalize(ctx, j, st, jobs.StatusCancelled)
	case j.Status == jobs.StatusFinalizing:
		return s.finalize(ctx, j, st, jobs.StatusCompleted)
	case j.Status == jobs.StatusInProgress && st.completed+st.failed >= j.RequestCounts.Total:
		j, err := s.store.Transition(ctx, j.ID, jobs.StatusFinalizing, nil)
		if err != nil {
			return err
		}
		return s.finalize(ctx, j, st, jobs.StatusCompleted)
	case (j.Status == jobs.StatusInProgress || j.Status == jobs.StatusValidating) && j.ExpiresAt > 0 && s.now().Unix() > j.ExpiresAt:
		return s.finalize(ctx, j, st, jobs.StatusExpired)
	}
	return nil
}

// finalize merges the parts into the final files and moves the job to status.
func (s *Sink) finalize(ctx context.Context, j jobs.Job, st *jobState, to jobs.Status) error {
	out, err := s.writeFinal(ctx, j.ID, st)
	if err != nil {
		return err
	}
	_, err = s.store.Transition(ctx, j.ID, to, func(jj *jobs.Job) {
		jj.Outputs = out
		jj.RequestCounts.Completed, jj.RequestCounts.Failed = st.completed, st.failed
	})
	if err != nil {
		return err
	}
	delete(s.open, j.ID)
	s.log.Info().Str("job", j.ID).Dict("context", zerolog.Dict().Str("status", string(to)).Int("completed", st.completed).
		Int("failed", st.failed).Str("dir", out.Dir)).Msg("job finalised")
	return nil
}

// outputs are where a job's final files are, on this machine (the job
// record names them for the CLI).
func (s *Sink) outputs(job string) (jobs.Outputs, error) {
	var out jobs.Outputs
	for _, f := range []struct {
		path *string
		key  string
	}{
		{&out.Dir, storage.Job(job)},
		{&out.Output, storage.JobFile(job, FileOutput)},
		{&out.Errors, storage.JobFile(job, FileErrors)},
		{&out.Parquet, storage.JobFile(job, FileResults)},
	} {
		var err error
		if *f.path, err = s.files.Path(f.key); err != nil {
			return jobs.Outputs{}, fmt.Errorf("job %s: %w", job, err)
		}
	}
	return out, nil
}

func (s *Sink) writeFinal(ctx context.Context, job string, st *jobState) (jobs.Outputs, error) {
	parts, err := st.parts.List(ctx)
	if err != nil {
		return jobs.Outputs{}, err
	}
	out, err := s.outputs(job)
	if err != nil {
		return out, err
	}
	// Each pass streams the parts: memory stays bounded by a part.
	each := func(f func(Row) error) error {
		seen := map[string]struct{}{}
		for _, p := range parts {
			var ferr error
			if err := readParquet(ctx, s.files, p.Key, func(r Row) {
				if _, dup := seen[r.CustomID]; dup || ferr != nil {
					return
				}
				seen[r.CustomID] = struct{}{}
				ferr = f(r)
			}); err != nil {
				return fmt.Errorf("read part %s: %w", p.Key, err)
			}
			if ferr != nil {
				return ferr
			}
		}
		return nil
	}
	put := func(file string, write func(io.Writer) error) error {
		_, err := s.files.Put(ctx, storage.JobFile(job, file), write)
		return err
	}
	if err := put(FileResults, func(w io.Writer) error {
		pw := parquet.NewGenericWriter[Row](w, pqOpts...)
		n := 0
		if err := each(func(r Row) error {
			if _, err := pw.Write([]Row{r}); err != nil {
				return err
			}
			if n++; n%rowGroupRows == 0 { // bound the writer's buffers
				return pw.Flush()
			}
			return nil
		}); err != nil {
			return err
		}
		return pw.Close()
	}); err != nil {
		return out, fmt.Errorf("job %s: %s: %w", job, FileResults, err)
	}
	for _, f := range []struct {
		file   string
		failed bool
	}{{FileOutput, false}, {FileErrors, true}} {
		if err := put(f.file, func(w io.Writer) error {
			enc := json.NewEncoder(w)
			enc.SetEscapeHTML(false)
			return each(func(r Row) error {
				if f.failed && !r.Failed() {
					return nil
				}
				return enc.Encode(outputLine(r))
			})
		}); err != nil {
			return out, fmt.Errorf("job %s: %s: %w", job, f.file, err)
		}
	}
	return out, nil
}

// Sweep settles the jobs that no message will wake: those left finalizing or
// cancelling by a crash, those complete whose last row came before their
// total was known, and those past their completion window. With all false it
// looks only at the jobs this sink has open; with all true at every job in
// lf_jobs. Training jobs are left alone: they have no requests (their
// counts are 0 of 0) and their train worker ends them.
func (s *Sink) Sweep(ctx context.Context, all bool) error {
	var list []jobs.Job
	if all {
		var err error
		if list, err = s.store.List(ctx); err != nil {
			return err
		}
	} else {
		s.mu.Lock()
		ids := make([]string, 0, len(s.open))
		for id := range s.open {
			ids = append(ids, id)
		}
		s.mu.Unlock()
		for _, id := range ids {
			j, err := s.store.Get(ctx, id)
			if err != nil {
				if errors.Is(err, jobs.ErrNotFound) {
					s.mu.Lock()
					delete(s.open, id)
					s.mu.Unlock()
					continue
				}
				return err
			}
			list = append(list, j)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var first error
	for _, j := range list {
		if j.Status.Terminal() || j.Kind == jobs.KindTraining {
			delete(s.open, j.ID)
			continue
		}
		if j.Status == jobs.StatusValidating && !(j.ExpiresAt > 0 && s.now().Unix() > j.ExpiresAt) {
			continue
		}
		st, err := s.load(ctx, j.ID)
		if err == nil {
			if j.RequestCounts.Completed != st.completed || j.RequestCounts.Failed != st.failed {
				j, err = s.store.SetCounts(ctx, j.ID, st.completed, st.failed)
			}
		}
		if err == nil {
			err = s.settle(ctx, j, st)
		}
		if err != nil && ctx.Err() == nil && !errors.Is(err, jobs.ErrIllegalTransition) {
			s.log.Warn().Err(err).Str("job", j.ID).Msg("sweep")
			if first == nil {
				first = err
			}
		}
	}
	return first
}

func shortHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:12])
}

// ReadOutput reads the lines of an output.jsonl or errors.jsonl.
func ReadOutput(path string) ([]schemas.OutputLine, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []schemas.OutputLine
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 8<<20)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var l schemas.OutputLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		out = append(out, l)
	}
	return out, sc.Err()
}
