// Package resultsink writes the results of batch jobs: it consumes
// lf.res.<job> and keeps, per job in an artifact store (storage.JobParts:
// jobs/<job>/parts/part-NNNNNN.parquet in lf_artifacts, or a directory in
// tests), immutable Parquet parts of the rows as they arrive (one part per
// fetched batch, stored whole before the batch is acked). Any number of
// sinks may run on one bus: they share the durable consumer, each stores
// the batches it gets, and nothing lives only in a sink's memory.
//
// Counting. After a part is stored its sink adds its rows to the job's
// counts (a compare-and-set on the record in lf_jobs), so the counts never
// fall short of the rows stored: a sink that dies between storing and
// counting leaves messages unacked, and whichever sink gets them again
// either has not seen the ids (it stores and counts them) or reads the
// parts when it first meets the job and raises the counts to the distinct
// rows they hold (plus what was counted meanwhile). A sink dedupes the rows
// it has seen itself (a storage.Deduper seeded from the parts it found),
// not across sinks: a per-row claim through the bus would cost a round trip
// per result, and a result two sinks both store (redelivered after a sink
// died) costs only a row the merge drops. The counts may so run past the
// distinct rows; the finalizer below makes them exact.
//
// Finalizing: one finalizer per job, chosen through the job record
// (Job.Finalizer, and Job.FinalizerUntil, a lease of Options.FinalizeLease,
// default DefaultFinalizeLease, renewed as it works; the record is the
// lock). The final files, jobs/<job>/results.parquet, output.jsonl (the
// OpenAI batch output shape) and errors.jsonl, are assembled as the job
// runs (see Assembly in assembly.go): the first sink to count a part while
// nobody holds the job claims it in that compare-and-set and writes each
// part into its local copies of the three files as it goes, so that when
// the job's counts reach its total (or it is cancelling or past its window)
// it moves the job to finalizing, reads only the parts it has not met and
// stores the three files, each whole (objects are immutable; object stores
// cannot append). A sink that finds a job whose holder's lease has run out
// takes it over the same way, so a finalizer that dies delays the job by at
// most the lease; a sink that takes over, like a job with replayed rows,
// merges the parts, in number order, once, streaming, into the three
// objects at once. A row whose custom_id came before is dropped. If the
// rows brought together are fewer than the total, the job goes back to
// in_progress with exact counts; otherwise it completes and its record
// names the three objects (jobs.Outputs), plus a local copy when the sink
// mirrors to a data directory (WithMirror; the embedded default).
//
// Memory is bounded by the batch, not the job: storing a batch holds its
// rows (the consumer's fetch, 256); an assembly (at most maxAssemblies a
// sink) or a merge holds one batch of rows, the Parquet writer's row group
// (rowGroupRows rows, then flushed), 256 KiB of buffer per output, and 16
// bytes of hash per distinct custom_id for the duplicate check (a map:
// about 45 bytes a row, some 45 MB for 1M rows, whatever the rows' size);
// the custom_ids a job submitted (jobs.IDSet, checked as results arrive)
// cost as much again. An assembly's files take the disk of the final files
// in the system's temporary directory until they are stored. Parts are read
// one at a time (an object store's part is downloaded to a temporary file).
// BenchmarkAssembly reports the merge's rows/s and peak heap: some 35 MB of
// Parquet buffers plus the map (40 MB at 100k rows, 48 MB at 300k, so about
// 80 MB at 1M; LF_BENCH_ASSEMBLY_ROWS=1000000 measures it).
//
// The sink also finalises cancelled jobs with what they have, expires jobs
// past their completion window, and turns the requests dead-lettered by the
// infer workers into error rows. Training jobs are not its business: their
// train worker runs their whole lifecycle, and the sink never writes their
// records.
package resultsink

import (
	"bufio"
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/parquet-go/parquet-go"
	pqzstd "github.com/parquet-go/parquet-go/compress/zstd"
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

// DefaultFinalizeLease is how long a finalizer holds a job without renewing
// its claim before another sink may take the job over.
const DefaultFinalizeLease = 30 * time.Second

// Sink writes the results of the jobs of a job store into an artifact store.
type Sink struct {
	files  storage.Store
	mirror *storage.Local // optional local copy of the final files
	store  *jobs.Store
	log    zerolog.Logger
	now    func() time.Time
	id     string        // this sink, as a job's finalizer
	lease  time.Duration // a finalizer's claim
	// catchUpEvery: how often at most an assembly reads other sinks' parts
	catchUpEvery time.Duration
	wake         chan string // jobs that may be ready to finalise

	mu       sync.Mutex
	open     map[string]*jobState
	stopping bool // the sink gave its jobs back (release)

	// remaining: the rows each in-progress job lacked when this sink last
	// read its record (see ResultsLacking); its own lock, asked while a
	// batch is handled under mu.
	remMu     sync.Mutex
	remaining map[string]int
}

// Option configures a Sink.
type Option func(*Sink) error

// WithMirror also writes each job's final files into local (the embedded
// default's <data-dir>/jobs); the job record names the directory as
// Outputs.LocalDir.
func WithMirror(local *storage.Local) Option {
	return func(s *Sink) error {
		if local == nil {
			return fmt.Errorf("%w: nil mirror", ErrInvalidOption)
		}
		s.mirror = local
		return nil
	}
}

// WithFinalizeLease sets how long a claim to finalise a job holds without
// renewal (default DefaultFinalizeLease).
func WithFinalizeLease(d time.Duration) Option {
	return func(s *Sink) error {
		if d <= 0 {
			return fmt.Errorf("%w: finalize lease %v", ErrInvalidOption, d)
		}
		s.lease = d
		return nil
	}
}

// WithCatchUpEvery sets how often at most a job's assembly reads the parts
// other sinks stored (default DefaultCatchUpEvery).
func WithCatchUpEvery(d time.Duration) Option {
	return func(s *Sink) error {
		if d <= 0 {
			return fmt.Errorf("%w: catch-up interval %v", ErrInvalidOption, d)
		}
		s.catchUpEvery = d
		return nil
	}
}

// WithID names the sink in the job records it finalises (default: host name
// and a random suffix).
func WithID(id string) Option {
	return func(s *Sink) error {
		if id == "" {
			return fmt.Errorf("%w: empty sink id", ErrInvalidOption)
		}
		s.id = id
		return nil
	}
}

type jobState struct {
	parts     *storage.Parts
	dedupe    storage.Deduper // the custom_ids the parts hold
	submitted jobs.IDSet      // the custom_ids the job submitted, loaded as results need them
	completed int
	failed    int
	asm       *assembly // the job's final files as they are written (see Assembly); nil when not assembled here
}

// New returns a sink writing the results of store's jobs into files.
func New(files storage.Store, store *jobs.Store, log zerolog.Logger, opts ...Option) (*Sink, error) {
	if files == nil || store == nil {
		return nil, fmt.Errorf("%w: the sink needs an artifact store and a job store", ErrInvalidOption)
	}
	s := &Sink{files: files, store: store, log: log.With().Str("logger", "largeforge.results-sink").Logger(), now: time.Now,
		id: defaultID(), lease: DefaultFinalizeLease, catchUpEvery: DefaultCatchUpEvery, wake: make(chan string, 64), open: map[string]*jobState{}, remaining: map[string]int{}}
	for _, o := range opts {
		if err := o(s); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// defaultID is the host name and 8 random hex digits.
func defaultID() string {
	host, _ := os.Hostname()
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%x", cmp.Or(host, "sink"), b)
}

// ID is the sink's name as a finalizer.
func (s *Sink) ID() string { return s.id }

type idRow struct {
	CustomID  string  `parquet:"custom_id"`
	ErrorCode *string `parquet:"error_code,optional"`
}

// load returns a job's state, reading the ids of its parts the first time
// (j is the record read before): the parts seed the sink's duplicate check,
// and the job's counts are raised to the distinct rows they hold plus what
// other sinks counted since j was read, so that rows stored by a sink that
// died before counting them are counted.
func (s *Sink) load(ctx context.Context, j jobs.Job) (*jobState, error) {
	job := j.ID
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
	if len(list) > 0 {
		read := j.RequestCounts
		if _, err := s.store.Update(ctx, job, func(jj *jobs.Job) error {
			c := &jj.RequestCounts
			completed := max(c.Completed, st.completed+c.Completed-read.Completed)
			failed := max(c.Failed, st.failed+c.Failed-read.Failed)
			if completed == c.Completed && failed == c.Failed {
				return jobs.ErrSkip
			}
			c.Completed, c.Failed = completed, failed
			return nil
		}); err != nil {
			return nil, err
		}
	}
	s.open[job] = st
	return st, nil
}

// forget drops a job's state (and its assembly). The caller holds s.mu.
func (s *Sink) forget(job string) {
	if st := s.open[job]; st != nil {
		s.endAssembly(st)
		delete(s.open, job)
	}
	s.remMu.Lock()
	delete(s.remaining, job)
	s.remMu.Unlock()
}

// noteRemaining records how many rows job j lacks, as its record says
// (an in-progress job, whose total is known), for ResultsLacking: -1 for a
// job still validating (its total not known yet), none for another.
func (s *Sink) noteRemaining(j jobs.Job) {
	s.remMu.Lock()
	defer s.remMu.Unlock()
	switch {
	case j.Status == jobs.StatusInProgress && j.RequestCounts.Total > 0:
		s.remaining[j.ID] = j.RequestCounts.Total - j.RequestCounts.Done()
	case j.Status == jobs.StatusValidating:
		s.remaining[j.ID] = -1
	default:
		delete(s.remaining, j.ID)
	}
}

// remainingOf is what noteRemaining recorded of job.
func (s *Sink) remainingOf(job string) (int, bool) {
	s.remMu.Lock()
	defer s.remMu.Unlock()
	rem, ok := s.remaining[job]
	return rem, ok
}

// ResultsLacking is how many more results a gathered batch (the subjects
// of its messages, lf.res.<job>) is to take before it holds as many of each
// of its jobs as the job lacked when this sink last read its record: 0 when
// nothing more is coming for them, so the batch need not wait out its
// gather (pipeline.ConsumerConfig.GatherMore); -1 when a job's count is not
// known (still validating, ended, or its record unreadable now). The record
// of a job the sink has not met is read here, once; handleJob keeps the
// count up to date after. A record read before another sink counted rows,
// or a duplicate, only makes the batch wait as it would have: the answer
// changes when a batch closes, never what is stored.
func (s *Sink) ResultsLacking(subjects []string) int {
	n := map[string]int{}
	for _, subj := range subjects {
		job, ok := strings.CutPrefix(subj, "lf.res.")
		if !ok {
			return -1
		}
		n[job]++
	}
	lacking := 0
	for job, got := range n {
		rem, ok := s.remainingOf(job)
		if !ok {
			ctx, cancel := context.WithTimeout(context.Background(), lackingReadWait)
			j, err := s.store.Get(ctx, job)
			cancel()
			if err != nil {
				return -1
			}
			s.noteRemaining(j)
			rem, ok = s.remainingOf(job)
		}
		if !ok || rem < 0 {
			return -1
		}
		lacking += max(rem-got, 0)
	}
	return lacking
}

// lackingReadWait bounds ResultsLacking's read of a job record.
const lackingReadWait = time.Second

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
	return readParquetBatches(ctx, files, key, func(rows []T) error {
		for _, v := range rows {
			each(v)
		}
		return nil
	})
}

// pqOpts write the results' Parquet files (parts and results.parquet):
// zstd at its fastest level, as dataset parts are, which keeps most of the
// size benefit at a fraction of the default level's cost.
var pqOpts = []parquet.WriterOption{parquet.Compression(&pqzstd.Codec{Level: pqzstd.SpeedFastest})}

// rowGroupRows is the row group size of results.parquet.
const rowGroupRows = 8192

// stored is what add stored: a part (its key), its rows and their outcomes.
type stored struct {
	key               string
	rows              []Row
	completed, failed int
}

// add writes the rows new to the job as one part and counts them (in st). A row
// whose custom_id has a row already, or that would take the job's counts
// past room (when room >= 0), is refused: its rejected entry is set.
func (s *Sink) add(ctx context.Context, job string, st *jobState, results []Row, room int, rejected []error) (stored, error) {
	ids := make([]string, len(results))
	for i, r := range results {
		ids[i] = r.CustomID
	}
	fresh, err := st.dedupe.Claim(ctx, ids)
	if err != nil {
		return stored{}, fmt.Errorf("job %s: %w", job, err)
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
		return stored{}, fmt.Errorf("job %s: %w", job, err)
	}
	if len(rows) == 0 {
		return stored{}, nil
	}
	info, err := publishRows(ctx, st.parts, rows)
	if err != nil {
		return stored{}, errors.Join(fmt.Errorf("job %s: write part: %w", job, err), st.dedupe.Release(ctx, claimed))
	}
	out := stored{key: info.Key, rows: rows}
	for _, r := range rows {
		st.count(r.Failed())
		if r.Failed() {
			out.failed++
		} else {
			out.completed++
		}
	}
	return out, nil
}

type batchJob struct {
	idx     []int
	results []Row
	ridx    []int  // the message of each result
	replay  []bool // each result's HeaderReplay mark
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
		bj.replay = append(bj.replay, m.Header.Get(HeaderReplay) != "")
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
	s.noteRemaining(j) // an ended job's entry goes
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
	st, err := s.load(ctx, j)
	if err != nil {
		return err
	}
	if slices.Contains(bj.replay, true) {
		s.endAssembly(st) // a replayed row replaces one: merged at the end
		if err := s.replace(ctx, j, st, bj, errs); err != nil {
			return err
		}
		if j, err = s.store.Get(ctx, job); err != nil {
			return err
		}
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
	got, err := s.add(ctx, job, st, results, room, rejected)
	if err != nil {
		return err
	}
	for k, e := range rejected {
		if e != nil {
			errs[idx[k]] = e
		}
	}
	if len(got.rows) > 0 {
		// Counted after the part is stored: counts never fall short of
		// the rows stored. The count claims the job for its assembly
		// when nobody holds it.
		var claim claimOutcome
		j, claim, err = s.countAndClaim(ctx, job, got.completed, got.failed, !s.stopping && (st.asm != nil || s.assemblies() < maxAssemblies))
		if err != nil {
			// The rows are stored but not counted: the job's state is
			// read again from its parts at the redelivery (load counts
			// them), where it would see them as duplicates and never
			// count them.
			s.forget(job)
			return err
		}
		s.assembleStored(job, st, claim, got.key, got.rows)
	}
	s.noteRemaining(j)
	if s.ready(j) {
		select {
		case s.wake <- job:
		default: // the sweep will find it
		}
	}
	return nil
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

// ready reports whether a job may need a finalizer now: it is complete,
// cancelling or finalizing (its finalizer's lease may have run out), or past
// its completion window.
func (s *Sink) ready(j jobs.Job) bool {
	switch j.Status {
	case jobs.StatusCancelling, jobs.StatusFinalizing:
		return j.Finalizer == "" || j.Finalizer == s.id || s.now().UnixMilli() >= j.FinalizerUntil
	case jobs.StatusInProgress:
		return (len(j.Replaying) == 0 && j.RequestCounts.Done() >= j.RequestCounts.Total) || s.expired(j)
	case jobs.StatusValidating:
		return s.expired(j)
	}
	return false
}

// settle finalises a job that is ready, when this sink wins its claim.
func (s *Sink) settle(ctx context.Context, j jobs.Job) error {
	if !s.ready(j) || j.Kind == jobs.KindTraining {
		return nil
	}
	j, err := s.claim(ctx, j.ID, true)
	if errors.Is(err, errNotFinalizer) {
		return nil
	}
	if err != nil {
		return err
	}
	to := jobs.StatusCompleted
	switch {
	case j.Status == jobs.StatusCancelling:
		to = jobs.StatusCancelled
	case j.Status != jobs.StatusFinalizing:
		to = jobs.StatusExpired
	}
	return s.finalize(ctx, j, to)
}

// Settle finalises job if it is ready and this sink wins its claim (the
// sink's workers call it when a batch completes a job).
func (s *Sink) Settle(ctx context.Context, job string) error {
	j, err := s.store.Get(ctx, job)
	if err != nil {
		return err
	}
	return s.settle(ctx, j)
}

// Ready are the jobs a batch may have made ready to finalise (see Settle).
func (s *Sink) Ready() <-chan string { return s.wake }

// Sweep settles the jobs that no message will wake: those left finalizing or
// cancelling by a dead finalizer (once its lease has run out), those
// complete whose last row came before their total was known, and those past
// their completion window. With all false it
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
					s.forget(id)
					s.mu.Unlock()
					continue
				}
				return err
			}
			list = append(list, j)
		}
	}
	var first error
	for _, j := range list {
		if j.Status.Terminal() || j.Kind == jobs.KindTraining {
			s.mu.Lock()
			s.forget(j.ID)
			s.mu.Unlock()
			continue
		}
		s.tend(ctx, j)
		if err := s.settle(ctx, j); err != nil && ctx.Err() == nil && !errors.Is(err, jobs.ErrIllegalTransition) {
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

// ReadOutput reads the lines of an output.jsonl or errors.jsonl file.
func ReadOutput(path string) ([]schemas.OutputLine, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out, err := DecodeOutput(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return out, nil
}

// DecodeOutput reads the lines of an output.jsonl or errors.jsonl.
func DecodeOutput(r io.Reader) ([]schemas.OutputLine, error) {
	var out []schemas.OutputLine
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 8<<20)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var l schemas.OutputLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return nil, err
		}
		out = append(out, l)
	}
	return out, sc.Err()
}
