package resultsink

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/storage"
)

// Assembly. The sink that first stores a part of a job claims the job as its
// finalizer at once (Job.Finalizer and its lease, as at the end) and opens
// the uploads of the job's three final objects: each part it stores goes
// into them from memory as it is stored, and the parts other sinks store are
// read once, when its sweep finds them (every SweepEvery). When the job is
// complete the finalizer reads only the parts it has not met yet, ends the
// uploads, and the objects appear whole; it never reads the job's parts
// again at the end. The claim's lease is renewed as parts come and at each
// sweep; other sinks leave the job's finalization to its holder while the
// lease holds, and take it over (with a merge of every part) once it runs
// out. Whatever the assembly cannot do as it goes (an upload fails, a
// replay changes a row, the lease is lost) ends it, and the job is merged
// at the end as before.

// maxAssemblies bounds the jobs a sink assembles at once: each holds a
// Parquet row group and the writers' buffers (BenchmarkAssembly's
// peak_heap_MB, less the duplicate check's map). The jobs past it are
// merged at the end.
const maxAssemblies = 8

// errAssemblyEnded: an assembly was ended before its job was finalised.
var errAssemblyEnded = errors.New("assembly ended")

// assembly writes a job's final objects as its parts are stored.
type assembly struct {
	job     string
	out     jobs.Outputs
	items   chan asmItem
	done    chan struct{} // closed when the uploads have returned
	err     error         // the uploads', once done
	stop    context.CancelFunc
	renewed time.Time // the last renewal of the claim
	// completed and failed count the rows written, set when done.
	completed, failed int

	// consumed holds the part keys written (or being written) into the
	// objects; guarded by the Sink's mu, like the map of assemblies.
	consumed map[string]bool
}

// asmItem is a part's rows for the writer, or (with sync set) a request for
// the rows kept so far.
type asmItem struct {
	rows []Row
	sync chan [2]int // completed, failed
	end  bool        // no more rows: end the objects
}

// startAssembly opens the uploads of job's final objects. The caller holds
// s.mu and the job's claim.
func (s *Sink) startAssembly(job string) (*assembly, error) {
	targets, out, err := s.finalTargets(job)
	if err != nil {
		return nil, err
	}
	for i := range targets {
		if targets[i].files == s.files {
			targets[i].chunkID = assemblyChunkID(job, targets[i].key, s.id)
		}
	}
	ctx, stop := context.WithCancel(context.Background())
	a := &assembly{job: job, out: out, items: make(chan asmItem, 4), done: make(chan struct{}), stop: stop,
		renewed: s.now(), consumed: map[string]bool{}}
	go func() {
		defer close(a.done)
		a.err = putTogether(ctx, targets, func(ws []io.Writer) error {
			fw := newFinalWriter(ws)
			for {
				var it asmItem
				select {
				case it = <-a.items:
				case <-ctx.Done():
					return ctx.Err()
				}
				switch {
				case it.end:
					a.completed, a.failed = fw.completed, fw.failed
					return fw.close()
				case it.sync != nil:
					it.sync <- [2]int{fw.completed, fw.failed}
				default:
					if err := fw.write(it.rows); err != nil {
						return err
					}
				}
			}
		})
		if a.err == nil {
			a.err = errAssemblyEnded // ended before its job was finalised
		}
	}()
	return a, nil
}

// assemblyChunkID names the chunks of the upload of a job's final object
// key by the assembly of sink: a sink that takes the job over knows the
// holder before it (Job.Finalizer), and so the chunks of an upload it left
// unfinished.
func assemblyChunkID(job, key, sink string) string {
	return pipeline.ChunkID("assembly", job, key, sink)
}

// purgeAssembly drops the chunks of an unfinished upload of job's final
// objects by the assembly of sink (nothing when they are none, or the
// store names no chunks).
func (s *Sink) purgeAssembly(ctx context.Context, job, sink string) {
	cs, ok := s.files.(chunkStore)
	if !ok {
		return
	}
	for _, file := range []string{FileResults, FileOutput, FileErrors} {
		if err := cs.PurgeChunks(ctx, assemblyChunkID(job, storage.JobFile(job, file), sink)); err != nil {
			s.log.Warn().Err(err).Str("job", job).Str("holder", sink).Msg("drop an unfinished assembly's chunks")
		}
	}
}

// send hands the writer an item; false when the uploads have ended.
func (a *assembly) send(it asmItem) bool {
	select {
	case a.items <- it:
		return true
	case <-a.done:
		return false
	}
}

// feed writes a stored part's rows (key) into the objects; false when the
// uploads have ended.
func (a *assembly) feed(key string, rows []Row) bool {
	a.consumed[key] = true
	return a.send(asmItem{rows: rows})
}

// counts returns the rows written so far, completed and failed, once the
// writer has written every part fed before.
func (a *assembly) counts() (completed, failed int, ok bool) {
	c := make(chan [2]int, 1)
	if !a.send(asmItem{sync: c}) {
		return 0, 0, false
	}
	select {
	case n := <-c:
		return n[0], n[1], true
	case <-a.done:
		return 0, 0, false
	}
}

// finish ends the objects, which are stored whole when it returns no
// error, and returns the rows written, completed and failed.
func (a *assembly) finish() (completed, failed int, err error) {
	if !a.send(asmItem{end: true}) {
		return 0, 0, a.err
	}
	<-a.done
	if !errors.Is(a.err, errAssemblyEnded) {
		return 0, 0, a.err
	}
	return a.completed, a.failed, nil
}

// abort ends the uploads, storing nothing.
func (a *assembly) abort() {
	a.stop()
	<-a.done
}

// assemble makes this sink the job's assembler when nobody else holds the
// job and it may be assembled as it goes (see above); it reads the parts
// stored before once. The caller holds s.mu. Nothing it fails to do is an
// error of the batch: the job is merged at the end instead.
func (s *Sink) assemble(ctx context.Context, j jobs.Job, st *jobState) {
	if s.stopped || st.asm != nil || st.noAssembly || len(j.Replaying) > 0 || len(j.Replaced) > 0 ||
		(j.Status != jobs.StatusInProgress && j.Status != jobs.StatusValidating) {
		return
	}
	now := s.now()
	if j.Finalizer != "" && j.Finalizer != s.id && now.UnixMilli() < j.FinalizerUntil {
		return // another sink's
	}
	running := 0
	for _, o := range s.open {
		if o.asm != nil {
			running++
		}
	}
	if running >= maxAssemblies {
		return // tried again with the job's next batch
	}
	mine := false
	prev := ""
	if _, err := s.store.Update(ctx, j.ID, func(jj *jobs.Job) error {
		mine, prev = false, jj.Finalizer
		if (jj.Status != jobs.StatusInProgress && jj.Status != jobs.StatusValidating) || len(jj.Replaying) > 0 || len(jj.Replaced) > 0 ||
			(jj.Finalizer != "" && jj.Finalizer != s.id && s.now().UnixMilli() < jj.FinalizerUntil) {
			return jobs.ErrSkip
		}
		jj.Finalizer, jj.FinalizerUntil = s.id, s.now().Add(s.lease).UnixMilli()
		mine = true
		return nil
	}); err != nil || !mine {
		if err != nil {
			s.log.Debug().Err(err).Str("job", j.ID).Msg("claim the job's assembly")
		}
		return
	}
	// An upload of the objects that never finished, under the chunk ids of
	// the holder before (its lease ran out; this sink in a life before a
	// restart), is dropped first. A holder that stopped gave the job back
	// (its uploads dropped as they failed).
	if prev != "" {
		s.purgeAssembly(ctx, j.ID, prev)
	}
	a, err := s.startAssembly(j.ID)
	if err != nil {
		s.log.Warn().Err(err).Str("job", j.ID).Msg("assembly not started: the job is merged at the end")
		st.noAssembly = true
		return
	}
	st.asm = a // the parts stored before are read at the next sweep (advance)
}

// catchUp writes into the job's assembly a the job's stored parts it has
// not met (those of other sinks, those stored before it began), in number
// order. It reads them without holding s.mu, so that the sink's batches go
// on meanwhile (a part is marked met before it is read: the batches feed
// only the parts they store). A part it fails to read ends the assembly.
func (s *Sink) catchUp(ctx context.Context, job string, a *assembly) error {
	s.mu.Lock()
	st := s.open[job]
	s.mu.Unlock()
	if st == nil {
		return errAssemblyEnded
	}
	list, err := st.parts.List(ctx)
	if err == nil {
		for _, p := range list {
			s.mu.Lock()
			live, met := st.asm == a, a.consumed[p.Key]
			if live && !met {
				a.consumed[p.Key] = true
			}
			s.mu.Unlock()
			if !live {
				return errAssemblyEnded
			}
			if met {
				continue
			}
			if err = s.readInto(ctx, a, p.Key); err != nil {
				break
			}
		}
	} else {
		err = fmt.Errorf("list parts: %w", err)
	}
	if err != nil {
		s.mu.Lock()
		if st.asm == a {
			s.endAssembly(st, err)
		}
		s.mu.Unlock()
	}
	return err
}

// readInto writes the rows of the stored part key into a.
func (s *Sink) readInto(ctx context.Context, a *assembly, key string) error {
	err := readParquetBatches(ctx, s.files, key, func(batch []Row) error {
		if !a.send(asmItem{rows: slices.Clone(batch)}) { // the batch's slice is reused
			return fmt.Errorf("%w: %w", errAssemblyEnded, a.err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("read part %s: %w", key, err)
	}
	return nil
}

// stored writes a part this sink has just stored into the job's assembly,
// and renews the claim when a third of the lease has passed. The caller
// holds s.mu.
func (s *Sink) stored(ctx context.Context, st *jobState, key string, rows []Row) {
	a := st.asm
	if a == nil {
		return
	}
	if !a.feed(key, rows) {
		s.endAssembly(st, a.err)
		return
	}
	s.renewAssembly(ctx, st)
}

// renewAssembly renews the claim of st's assembly when a third of the lease
// has passed; a claim lost ends the assembly. The caller holds s.mu.
func (s *Sink) renewAssembly(ctx context.Context, st *jobState) {
	a := st.asm
	if a == nil || s.now().Sub(a.renewed) < s.lease/3 {
		return
	}
	switch err := s.renew(ctx, a.job); {
	case err == nil:
		a.renewed = s.now()
	case errors.Is(err, errNotFinalizer):
		s.endAssembly(st, err)
	default:
		s.log.Debug().Err(err).Str("job", a.job).Msg("renew the job's assembly")
	}
}

// endAssembly aborts st's assembly: its job is merged at the end. The
// caller holds s.mu.
func (s *Sink) endAssembly(st *jobState, why error) {
	if st.asm == nil {
		return
	}
	st.asm.abort()
	s.log.Info().Err(why).Str("job", st.asm.job).Msg("assembly ended: the job is merged at the end")
	st.asm, st.noAssembly = nil, true
}

// advance brings the assembly of an open job up to its stored parts and
// renews its claim (the sweep calls it); an assembly whose job ended or
// went to another finalizer is aborted.
func (s *Sink) advance(ctx context.Context, j jobs.Job) {
	s.mu.Lock()
	st := s.open[j.ID]
	if st == nil || st.asm == nil {
		s.mu.Unlock()
		return
	}
	a := st.asm
	if j.Status.Terminal() || (j.Finalizer != s.id && s.now().UnixMilli() < j.FinalizerUntil) || len(j.Replaying) > 0 {
		s.endAssembly(st, errNotFinalizer)
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	if j.Status != jobs.StatusInProgress && j.Status != jobs.StatusValidating {
		return // finalize catches up
	}
	if s.catchUp(ctx, j.ID, a) != nil {
		return
	}
	s.mu.Lock()
	if st.asm == a {
		s.renewAssembly(ctx, st)
	}
	s.mu.Unlock()
}

// takeAssembly returns the job's assembly, brought up to its stored parts,
// for its finalizer, or nil when the job has none (or it failed: aborted).
func (s *Sink) takeAssembly(ctx context.Context, job string) *assembly {
	s.mu.Lock()
	st := s.open[job]
	if st == nil || st.asm == nil {
		s.mu.Unlock()
		return nil
	}
	a := st.asm
	s.mu.Unlock()
	if s.catchUp(ctx, job, a) != nil {
		return nil
	}
	return a
}

// releaseWait bounds how long a stopping sink tries to give its jobs back.
const releaseWait = 5 * time.Second

// abortAssemblies aborts every assembly, starts no more (the sink is
// stopping) and gives the jobs back: another sink may take them at once,
// not only when the lease runs out (as it does when a sink dies).
func (s *Sink) abortAssemblies() {
	s.mu.Lock()
	s.stopped = true
	var held []string
	for id, st := range s.open {
		if st.asm != nil {
			st.asm.abort()
			st.asm = nil
			held = append(held, id)
		}
	}
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), releaseWait)
	defer cancel()
	for _, id := range held {
		if _, err := s.store.Update(ctx, id, func(j *jobs.Job) error {
			if j.Finalizer != s.id || (j.Status != jobs.StatusInProgress && j.Status != jobs.StatusValidating) {
				return jobs.ErrSkip
			}
			j.Finalizer, j.FinalizerUntil = "", 0
			return nil
		}); err != nil {
			s.log.Debug().Err(err).Str("job", id).Msg("give the job back")
		}
	}
}
