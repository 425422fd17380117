package model

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// A team runs the parts of one forward on every core at once: the caller
// and helper goroutines that outlive the call. A helper that has run its
// share waits a little (teamSpin) for the next forward, yielding its core to
// any other goroutine meanwhile, before it sleeps: the forwards of a decoder
// follow each other by tens of microseconds, and a goroutine started, or a
// sleeping one woken, for each of them waits that long or more for an idle
// core to wake up and take it, while the caller's core runs the parts alone.
//
// One forward uses the team at a time; a forward that finds it taken runs
// its parts on goroutines of its own.
type team struct {
	mu      sync.Mutex // held by the forward using the team
	helpers []*helper
}

// teamSpin is how long a helper waits for the next forward before it sleeps.
const teamSpin = 200 * time.Microsecond

// forwardTeam is the process's team.
var forwardTeam team

type helper struct {
	job    atomic.Pointer[teamJob]
	asleep atomic.Bool
	wake   chan struct{} // one token: a job came while it slept
}

type teamJob struct {
	f    func(w int)
	w    int
	left *teamLeft
}

// teamLeft counts the helpers' calls of a run still running; the caller
// waits for none to be left as a helper waits for a job.
type teamLeft struct {
	n      atomic.Int32
	asleep atomic.Bool
	wake   chan struct{}
}

// done counts a helper's call done, waking the caller after the last.
func (l *teamLeft) done() {
	if l.n.Add(-1) == 0 && l.asleep.Load() {
		select {
		case l.wake <- struct{}{}:
		default:
		}
	}
}

// wait returns when every helper's call is done: teamSpin yielding the
// core, then asleep.
func (l *teamLeft) wait() {
	for start := time.Now(); time.Since(start) < teamSpin; {
		if l.n.Load() == 0 {
			return
		}
		runtime.Gosched()
	}
	for {
		l.asleep.Store(true)
		if l.n.Load() == 0 {
			return
		}
		<-l.wake
	}
}

// run calls f(0), ..., f(workers-1) at once, f(0) on the calling goroutine,
// and returns when every call has returned.
func (t *team) run(workers int, f func(w int)) {
	if workers <= 1 {
		f(0)
		return
	}
	if !t.mu.TryLock() {
		var done sync.WaitGroup
		for w := 1; w < workers; w++ {
			done.Go(func() { f(w) })
		}
		f(0)
		done.Wait()
		return
	}
	defer t.mu.Unlock()
	for len(t.helpers) < workers-1 {
		h := &helper{wake: make(chan struct{}, 1)}
		t.helpers = append(t.helpers, h)
		go h.loop()
	}
	left := &teamLeft{wake: make(chan struct{}, 1)}
	left.n.Store(int32(workers - 1))
	for w := 1; w < workers; w++ {
		t.helpers[w-1].give(&teamJob{f: f, w: w, left: left})
	}
	f(0)
	left.wait()
}

// give hands the helper a job, waking it if it sleeps.
func (h *helper) give(j *teamJob) {
	h.job.Store(j)
	if h.asleep.Load() {
		select {
		case h.wake <- struct{}{}:
		default:
		}
	}
}

// loop runs the helper's jobs, forever: the team is the process's.
func (h *helper) loop() {
	for {
		j := h.next()
		j.f(j.w)
		j.left.done()
	}
}

// next waits for the helper's next job: teamSpin yielding its core, then
// asleep until give wakes it.
func (h *helper) next() *teamJob {
	for start := time.Now(); time.Since(start) < teamSpin; {
		if j := h.job.Swap(nil); j != nil {
			return j
		}
		runtime.Gosched()
	}
	for {
		h.asleep.Store(true)
		if j := h.job.Swap(nil); j != nil { // given before it fell asleep
			h.asleep.Store(false)
			return j
		}
		<-h.wake
		h.asleep.Store(false)
	}
}
