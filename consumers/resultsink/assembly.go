package resultsink

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/parquet-go/parquet-go"

	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/storage"
)

// Assembly. A job's final files are written as its results come, by one
// sink: the job's assembler, named by Job.Finalizer (with its lease,
// Job.FinalizerUntil) from the first part a sink stores and counts while
// nobody else holds the job (the claim rides on the compare-and-set that
// counts the part, and each later count renews it). The assembler writes
// every part it stores into its copies of the three files, from memory, as
// it stores it, and the parts other sinks store once its sweep finds them;
// the copies are local files (the spool, in the system's temporary
// directory, unlinked as soon as they are open: a sink that dies leaves
// nothing there): nothing on the bus waits on them, and nothing is lost
// with them, the parts being the truth. When the job is ready, its assembler
// (the finalizer: another sink leaves the job to it while its lease holds)
// reads only the parts it has not met yet, and uploads the three files as
// they are; it never reads the job's parts again. A sink that takes a job
// over (its assembler's lease ran out), a job with replayed rows (whose
// last row wins) and a sink holding maxAssemblies jobs merge the parts at
// the end instead, as before. A sink that stops gives its jobs back.
//
// The output order is the order the assembler met the parts: its own as it
// stored them, the others' at its sweeps.

// DefaultCatchUpEvery is how often at most an assembler lists a job's parts
// for those other sinks stored (from the first number it has not met); the
// parts stored since are read when the job is finalised.
const DefaultCatchUpEvery = 10 * time.Second

// maxAssemblies bounds the jobs a sink assembles at once: each holds a
// Parquet row group (rowGroupRows rows) and the writers' buffers. The jobs
// past it are merged at the end.
const maxAssemblies = 8

// assembly is a job's final files being written: the spool's three files
// and their writers. The Sink's mu guards an assembly attached to its job's
// state; finalize detaches it and then owns it alone.
type assembly struct {
	dir     string
	files   [3]*os.File // results.parquet, output.jsonl, errors.jsonl
	w       *finalWriter
	met     map[string]bool // the part keys written
	from    int             // every part numbered below it is met
	renewed time.Time       // the last renewal of the claim
	caught  time.Time       // the last look for other sinks' parts (see tend)
	counted int             // the job's counted rows at that look
}

// finalKeys are the final files of a job: the order of assembly.files and
// of finalWriter's writers.
func finalKeys(job string) [3]string {
	return [3]string{storage.JobFile(job, FileResults), storage.JobFile(job, FileOutput), storage.JobFile(job, FileErrors)}
}

// newAssembly opens the spool of job's final files. They have no names:
// a sink that dies leaves nothing behind. Where files cannot be opened
// unnamed (openUnnamed), they are created in a directory of their own,
// which is removed at once; the files live on through their descriptors
// (and where open files cannot be removed, drop removes them).
func newAssembly(job string, now time.Time) (*assembly, error) {
	a := &assembly{met: map[string]bool{}, renewed: now}
	if err := a.openSpoolUnnamed(); err != nil {
		if err := a.openSpoolNamed(job); err != nil {
			return nil, err
		}
	}
	ws := make([]io.Writer, len(a.files))
	for i, f := range a.files {
		ws[i] = f
	}
	a.w = newFinalWriter(ws)
	return a, nil
}

// openSpoolUnnamed opens the spool's files without names (openUnnamed) in
// the temporary directory.
func (a *assembly) openSpoolUnnamed() error {
	for i := range a.files {
		f, err := openUnnamed(os.TempDir())
		if err != nil {
			a.drop()
			a.files = [3]*os.File{}
			return err
		}
		a.files[i] = f
	}
	return nil
}

// openSpoolNamed creates the spool's files in a directory of their own and
// removes the directory, where it can.
func (a *assembly) openSpoolNamed(job string) error {
	dir, err := os.MkdirTemp("", "largeforge-results-"+job+"-")
	if err != nil {
		return fmt.Errorf("job %s: spool: %w", job, err)
	}
	a.dir = dir
	for i, name := range []string{FileResults, FileOutput, FileErrors} {
		if a.files[i], err = os.Create(filepath.Join(dir, name)); err != nil {
			a.drop()
			return fmt.Errorf("job %s: spool: %w", job, err)
		}
	}
	if err := os.RemoveAll(dir); err == nil {
		a.dir = ""
	}
	return nil
}

// add writes a part's rows (those not written before); key names the part.
func (a *assembly) add(key string, rows []Row) error {
	a.met[key] = true
	return a.w.write(rows)
}

// rows are the distinct rows written.
func (a *assembly) rows() int { return a.w.completed + a.w.failed }

// drop closes and removes the spool.
func (a *assembly) drop() {
	for _, f := range a.files {
		if f != nil {
			_ = f.Close()
		}
	}
	if a.dir != "" {
		_ = os.RemoveAll(a.dir)
	}
}

// upload ends the files and stores each, whole, in every target store
// under the job's final keys.
func (a *assembly) upload(ctx context.Context, job string, stores []storage.Store) error {
	if err := a.w.close(); err != nil {
		return fmt.Errorf("job %s: spool: %w", job, err)
	}
	keys := finalKeys(job)
	for i, f := range a.files {
		for _, st := range stores {
			if _, err := st.Put(ctx, keys[i], func(w io.Writer) error {
				if _, err := f.Seek(0, io.SeekStart); err != nil {
					return err
				}
				_, err := io.Copy(w, f)
				return err
			}); err != nil {
				return fmt.Errorf("job %s: store %s: %w", job, keys[i], err)
			}
		}
	}
	return nil
}

// finalWriter writes rows into a job's three final files at once (the
// writers of results.parquet, output.jsonl and errors.jsonl, in that
// order), each custom_id once: the first row written wins.
type finalWriter struct {
	bufs    [3]*bufio.Writer
	pw      *parquet.GenericWriter[Row]
	line    []byte // the output line being written
	seen    map[[16]byte]struct{}
	inGroup int
	fresh   []Row
	// completed and failed count the rows written.
	completed, failed int
}

func newFinalWriter(ws []io.Writer) *finalWriter {
	fw := &finalWriter{seen: map[[16]byte]struct{}{}}
	for i := range fw.bufs {
		fw.bufs[i] = bufio.NewWriterSize(ws[i], 256<<10)
	}
	fw.pw = parquet.NewGenericWriter[Row](fw.bufs[0], pqOpts...)
	return fw
}

// write writes the rows whose custom_id has no row yet.
func (fw *finalWriter) write(rows []Row) error {
	fw.fresh = fw.fresh[:0]
	for _, r := range rows {
		h := jobs.IDHash(r.CustomID)
		if _, dup := fw.seen[h]; dup {
			continue
		}
		fw.seen[h] = struct{}{}
		fw.fresh = append(fw.fresh, r)
		fw.line = outputLine(r).AppendJSON(fw.line[:0])
		if _, err := fw.bufs[1].Write(fw.line); err != nil {
			return err
		}
		if r.Failed() {
			fw.failed++
			if _, err := fw.bufs[2].Write(fw.line); err != nil {
				return err
			}
		} else {
			fw.completed++
		}
	}
	if _, err := fw.pw.Write(fw.fresh); err != nil {
		return err
	}
	if fw.inGroup += len(fw.fresh); fw.inGroup >= rowGroupRows { // bound the writer's buffers
		fw.inGroup = 0
		return fw.pw.Flush()
	}
	return nil
}

// close ends the Parquet file and flushes the three writers.
func (fw *finalWriter) close() error {
	if err := fw.pw.Close(); err != nil {
		return err
	}
	for _, b := range fw.bufs {
		if err := b.Flush(); err != nil {
			return err
		}
	}
	return nil
}

// claimOutcome is what a count's compare-and-set did with the job's claim.
type claimOutcome int

const (
	claimNone  claimOutcome = iota // the job is not to be assembled now
	claimHeld                      // this sink holds the job
	claimOther                     // another sink holds it, its lease running
)

// assemblable reports whether a job in state j may be assembled as it goes.
func assemblable(j *jobs.Job) bool {
	return (j.Status == jobs.StatusInProgress || j.Status == jobs.StatusValidating) &&
		j.Kind != jobs.KindTraining && len(j.Replaying) == 0 && len(j.Replaced) == 0
}

// countAndClaim adds a stored part's rows to the job's counts and, with
// claim, takes or renews the job's claim in the same compare-and-set (see
// Assembly above).
func (s *Sink) countAndClaim(ctx context.Context, job string, completed, failed int, claim bool) (jobs.Job, claimOutcome, error) {
	out := claimNone
	j, err := s.store.Update(ctx, job, func(j *jobs.Job) error {
		j.RequestCounts.Completed += completed
		j.RequestCounts.Failed += failed
		out = claimNone
		now := s.now()
		switch {
		case !claim || !assemblable(j):
		case j.Finalizer != "" && j.Finalizer != s.id && now.UnixMilli() < j.FinalizerUntil:
			out = claimOther
		default:
			j.Finalizer, j.FinalizerUntil = s.id, now.Add(s.lease).UnixMilli()
			out = claimHeld
		}
		return nil
	})
	return j, out, err
}

// assembleStored writes a part this sink stored (key, rows) into the
// job's assembly after the count that claimed the job (out), starting the
// assembly or ending it as the claim says. The caller holds s.mu. An
// assembly that fails is ended: the job is merged at the end.
func (s *Sink) assembleStored(job string, st *jobState, out claimOutcome, key string, rows []Row) {
	switch out {
	case claimOther:
		s.endAssembly(st)
		return
	case claimNone:
		return
	}
	if st.asm == nil {
		if s.assemblies() >= maxAssemblies {
			return
		}
		a, err := newAssembly(job, s.now())
		if err != nil {
			s.log.Warn().Err(err).Str("job", job).Msg("assembly not started; the job is merged at the end")
			return
		}
		st.asm = a
	}
	st.asm.renewed = s.now()
	if err := st.asm.add(key, rows); err != nil {
		s.log.Warn().Err(err).Str("job", job).Msg("assembly ended; the job is merged at the end")
		s.endAssembly(st)
	}
}

// assemblies counts the open jobs with an assembly attached. The caller
// holds s.mu.
func (s *Sink) assemblies() int {
	n := 0
	for _, st := range s.open {
		if st.asm != nil {
			n++
		}
	}
	return n
}

// endAssembly ends a job's assembly, if any. The caller holds s.mu.
func (s *Sink) endAssembly(st *jobState) {
	if st.asm != nil {
		st.asm.drop()
		st.asm = nil
	}
}

// detach takes a job's assembly from its state, for finalize to own.
func (s *Sink) detach(job string) *assembly {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.open[job]
	if st == nil || st.asm == nil {
		return nil
	}
	a := st.asm
	st.asm = nil
	return a
}

// reattach gives a detached assembly back to its job's state (its job went
// back to in_progress); it is dropped when the state is gone or has
// another meanwhile.
func (s *Sink) reattach(job string, a *assembly) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.open[job]
	if st == nil || st.asm != nil || s.assemblies() >= maxAssemblies {
		a.drop()
		return
	}
	st.asm = a
}

// catchUp writes into a the parts of job it has not met (in number order).
// The parts are read without s.mu and written under it (a's writer and its
// set of parts met are touched under s.mu only); with attached, a is
// attached to the job's state and is written only while it still is.
func (s *Sink) catchUp(ctx context.Context, job string, a *assembly, attached bool) error {
	parts, err := storage.JobParts(s.files, job)
	if err != nil {
		return err
	}
	s.mu.Lock()
	from := a.from
	s.mu.Unlock()
	list, err := parts.ListFrom(ctx, from)
	if err != nil {
		return fmt.Errorf("job %s: list parts: %w", job, err)
	}
	// The parts listed run on from from up to a gap (a part claimed and
	// not stored yet) or the end; those before the gap are met below.
	next := from
	for _, p := range list {
		if n, _ := storage.PartNumber(p.Key); n == next {
			next++
		}
		s.mu.Lock()
		met := a.met[p.Key]
		s.mu.Unlock()
		if met {
			continue
		}
		var rows []Row
		if err := readParquetBatches(ctx, s.files, p.Key, func(batch []Row) error {
			rows = append(rows, batch...)
			return nil
		}); err != nil {
			return fmt.Errorf("job %s: read part %s: %w", job, p.Key, err)
		}
		s.mu.Lock()
		st := s.open[job]
		if attached && (st == nil || st.asm != a) {
			s.mu.Unlock()
			return nil // ended meanwhile
		}
		err := a.add(p.Key, rows)
		if err != nil && attached {
			s.endAssembly(st)
		}
		s.mu.Unlock()
		if err != nil {
			return fmt.Errorf("job %s: spool: %w", job, err)
		}
	}
	s.mu.Lock()
	a.from = max(a.from, next)
	s.mu.Unlock()
	return nil
}

// tend keeps the jobs this sink assembles going between their parts (the
// sweep calls it with the job's record): it renews the claim once a third of
// the lease has passed, ending the assembly when another sink holds the job
// now, and, when the job counts rows the assembly does not hold (other
// sinks stored them), writes the parts it has not met, every s.catchUpEvery
// at most.
func (s *Sink) tend(ctx context.Context, j jobs.Job) {
	s.mu.Lock()
	st := s.open[j.ID]
	var a *assembly
	var due, behind bool
	if st != nil && st.asm != nil {
		a = st.asm
		due = s.now().Sub(a.renewed) > s.lease/3
		// Rows counted that the assembly does not hold, more than at the
		// last look (counts may stay past the distinct rows for good).
		done := j.RequestCounts.Done()
		behind = done > a.rows() && done > a.counted && s.now().Sub(a.caught) >= s.catchUpEvery
	}
	s.mu.Unlock()
	if a == nil || !assemblable(&j) {
		return
	}
	if due {
		err := s.renew(ctx, j.ID)
		s.mu.Lock()
		if errors.Is(err, errNotFinalizer) {
			if st.asm == a {
				s.endAssembly(st)
			}
			s.mu.Unlock()
			return
		}
		if err == nil {
			a.renewed = s.now()
		}
		s.mu.Unlock()
	}
	if !behind {
		return
	}
	if err := s.catchUp(ctx, j.ID, a, true); err != nil && ctx.Err() == nil {
		s.log.Warn().Err(err).Str("job", j.ID).Msg("assembly: parts of other sinks not read yet")
	}
	s.mu.Lock()
	a.caught, a.counted = s.now(), j.RequestCounts.Done()
	s.mu.Unlock()
}

// release gives back the jobs this sink assembles (a sink that stops):
// another sink may take them at once, not once the lease has run out.
func (s *Sink) release(ctx context.Context) {
	s.mu.Lock()
	s.stopping = true // the batches still draining claim nothing
	var held []string
	for job, st := range s.open {
		if st.asm != nil {
			held = append(held, job)
			s.endAssembly(st)
		}
	}
	s.mu.Unlock()
	for _, job := range held {
		if _, err := s.store.Update(ctx, job, func(j *jobs.Job) error {
			if j.Finalizer != s.id || !assemblable(j) {
				return jobs.ErrSkip
			}
			j.Finalizer, j.FinalizerUntil = "", 0
			return nil
		}); err != nil {
			s.log.Warn().Err(err).Str("job", job).Msg("give the job back")
		}
	}
}
