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
	left    teamLeft // the run's, reused: one run at a time
}

// teamSpin is how long a helper waits for the next forward, and the caller
// for the helpers' last part, before it sleeps.
const teamSpin = 200 * time.Microsecond

// forwardTeam is the process's team.
var forwardTeam team

type helper struct {
	job  atomic.Pointer[teamJob] // set to &next when a run gives it a job
	next teamJob
	w    waiter
}

type teamJob struct {
	f    func(w int)
	w    int
	left *teamLeft
}

// teamLeft counts the helpers' calls of a run still running.
type teamLeft struct {
	n atomic.Int32
	w waiter // the caller's
}

// A waiter is one goroutine's wait for a condition that another goroutine
// makes true: it checks for teamSpin, yielding its core between checks,
// then sleeps until the other goroutine wakes it.
type waiter struct {
	asleep atomic.Bool
	wake   chan struct{} // one token
}

func newWaiter() waiter { return waiter{wake: make(chan struct{}, 1)} }

// wait returns once ready has returned true.
func (w *waiter) wait(ready func() bool) {
	for start := time.Now(); time.Since(start) < teamSpin; {
		if ready() {
			return
		}
		runtime.Gosched()
	}
	for {
		w.asleep.Store(true)
		if ready() { // made true before it fell asleep
			w.asleep.Store(false)
			return
		}
		<-w.wake
	}
}

// wakeUp wakes the waiting goroutine if it sleeps; call it after making
// its condition true.
func (w *waiter) wakeUp() {
	if w.asleep.Load() {
		select {
		case w.wake <- struct{}{}:
		default: // a token is there already
		}
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
		h := &helper{w: newWaiter()}
		t.helpers = append(t.helpers, h)
		go h.loop()
	}
	if t.left.w.wake == nil {
		t.left.w = newWaiter()
	}
	left := &t.left
	left.n.Store(int32(workers - 1))
	for w := 1; w < workers; w++ {
		h := t.helpers[w-1]
		h.next = teamJob{f: f, w: w, left: left}
		h.job.Store(&h.next)
		h.w.wakeUp()
	}
	f(0)
	left.w.wait(func() bool { return left.n.Load() == 0 })
}

// loop runs the helper's jobs, forever: the team is the process's.
func (h *helper) loop() {
	for {
		var j *teamJob
		h.w.wait(func() bool {
			j = h.job.Swap(nil)
			return j != nil
		})
		f, w, left := j.f, j.w, j.left // j is reused by the next run
		f(w)
		if left.n.Add(-1) == 0 {
			left.w.wakeUp()
		}
	}
}
