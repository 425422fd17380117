package train

import (
	"context"
	"encoding/json"
	"math"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/largeforge/largeforge/model/train"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/schemas"
)

// Event publishing bounds.
const (
	// maxQueuedEvents bounds the events waiting for the bus; beyond it the
	// oldest are dropped (with a warning), never the trainer slowed.
	maxQueuedEvents = 4096
	eventTimeout    = 10 * time.Second
	// eventFlush is how long close waits for the events still queued.
	eventFlush = 10 * time.Second
)

// eventPublisher publishes a job's step and evaluation events on
// lf.events.train.<job> (stream LF_EVENTS) from a goroutine of its own, in
// order, so that the trainer never waits on the bus.
type eventPublisher struct {
	bus     *pipeline.Bus
	subject string
	job     string
	attempt int
	log     zerolog.Logger

	mu      sync.Mutex
	queue   []schemas.TrainEvent
	dropped int
	wake    chan struct{}
	quit    chan struct{}
	done    chan struct{}
}

func newEventPublisher(bus *pipeline.Bus, job string, attempt int, log zerolog.Logger) (*eventPublisher, error) {
	subject, err := pipeline.TrainEventSubject(job)
	if err != nil {
		return nil, err
	}
	ep := &eventPublisher{bus: bus, subject: subject, job: job, attempt: attempt, log: log,
		wake: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
	go ep.run()
	return ep, nil
}

// report queues the events of a step: the step's, and its evaluation's
// when it ran one.
func (ep *eventPublisher) report(p train.Progress) {
	now := time.Now().UnixMilli()
	evs := []schemas.TrainEvent{{Job: ep.job, Kind: schemas.TrainEventStep, Attempt: ep.attempt, GlobalStep: p.Step,
		MaxSteps: p.MaxSteps, Epoch: p.Epoch, Time: now, Loss: p.Loss, LearningRate: p.LearningRate,
		GradNorm: p.GradNorm, TrainSamplesPerSecond: p.SamplesPerSecond}}
	if e := p.Eval; e != nil && finite(e.Loss) != nil {
		evs = append(evs, schemas.TrainEvent{Job: ep.job, Kind: schemas.TrainEventEval, Attempt: ep.attempt, GlobalStep: p.Step,
			MaxSteps: p.MaxSteps, Epoch: p.Epoch, Time: now, EvalLoss: finite(e.Loss), Perplexity: finite(e.Perplexity), Accuracy: finite(e.Accuracy)})
	}
	ep.mu.Lock()
	ep.queue = append(ep.queue, evs...)
	if over := len(ep.queue) - maxQueuedEvents; over > 0 {
		ep.queue = ep.queue[over:]
		ep.dropped += over
	}
	ep.mu.Unlock()
	select {
	case ep.wake <- struct{}{}:
	default:
	}
}

// finite is &x, or nil for NaN and ±Inf (which JSON cannot carry).
func finite(x float64) *float64 {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return nil
	}
	return &x
}

func (ep *eventPublisher) run() {
	defer close(ep.done)
	for {
		ep.mu.Lock()
		batch := ep.queue
		ep.queue = nil
		dropped := ep.dropped
		ep.dropped = 0
		ep.mu.Unlock()
		if dropped > 0 {
			ep.log.Warn().Int("dropped", dropped).Msg("training events dropped: the bus is behind")
		}
		for _, ev := range batch {
			ep.publish(ev)
		}
		if len(batch) > 0 {
			continue
		}
		select {
		case <-ep.wake:
		case <-ep.quit:
			ep.mu.Lock()
			empty := len(ep.queue) == 0
			ep.mu.Unlock()
			if empty {
				return
			}
		}
	}
}

func (ep *eventPublisher) publish(ev schemas.TrainEvent) {
	data, err := json.Marshal(ev)
	if err != nil { // NaN or Inf: a diverged step
		ep.log.Warn().Err(err).Int("global_step", ev.GlobalStep).Msg("training event not encoded")
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), eventTimeout)
	defer cancel()
	if _, err := ep.bus.Publish(ctx, ep.subject, data, ev.MsgID(), nil); err != nil {
		ep.log.Warn().Err(err).Int("global_step", ev.GlobalStep).Str("kind", ev.Kind).Msg("publish training event")
	}
}

// close publishes the events still queued (for at most eventFlush) and
// stops the publisher.
func (ep *eventPublisher) close() {
	close(ep.quit)
	select {
	case <-ep.done:
	case <-time.After(eventFlush):
		ep.log.Warn().Msg("training events still queued at the end of the job")
	}
}
