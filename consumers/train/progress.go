package train

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/model/train"
)

// progressWriter writes a job's training progress into lf_jobs from a
// goroutine of its own, so that the trainer never waits on the bus: report
// keeps the newest step, and the writer stores it at most every `every`.
type progressWriter struct {
	store *jobs.Store
	id    string
	every time.Duration
	log   zerolog.Logger

	mu      sync.Mutex
	latest  train.Progress
	pending bool
	wake    chan struct{}
	quit    chan struct{}
	done    chan struct{}
}

func newProgressWriter(store *jobs.Store, id string, every time.Duration, log zerolog.Logger) *progressWriter {
	pw := &progressWriter{store: store, id: id, every: every, log: log,
		wake: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
	go pw.run()
	return pw
}

// report is the trainer's WithProgress callback.
func (pw *progressWriter) report(p train.Progress) {
	pw.mu.Lock()
	pw.latest, pw.pending = p, true
	pw.mu.Unlock()
	select {
	case pw.wake <- struct{}{}:
	default:
	}
}

func (pw *progressWriter) run() {
	defer close(pw.done)
	var last time.Time
	for {
		select {
		case <-pw.quit:
			return
		case <-pw.wake:
		}
		if wait := pw.every - time.Since(last); wait > 0 {
			select {
			case <-pw.quit:
				return
			case <-time.After(wait):
			}
		}
		pw.mu.Lock()
		p, ok := pw.latest, pw.pending
		pw.pending = false
		pw.mu.Unlock()
		if !ok {
			continue
		}
		last = time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := pw.store.Update(ctx, pw.id, func(j *jobs.Job) error {
			if j.Status != jobs.StatusInProgress || j.Training == nil {
				return jobs.ErrSkip
			}
			applyProgress(j.Training, p)
			j.Training.UpdatedAt = time.Now().Unix()
			return nil
		})
		cancel()
		if err != nil && !errors.Is(err, context.Canceled) {
			pw.log.Warn().Err(err).Int("step", p.Step).Msg("write training progress")
		}
	}
}

// close stops the writer and returns the newest progress reported (the
// caller writes it with the job's outcome).
func (pw *progressWriter) close() train.Progress {
	close(pw.quit)
	<-pw.done
	pw.mu.Lock()
	defer pw.mu.Unlock()
	return pw.latest
}
