package model

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// Batcher is a continuous batcher: one decode loop (Run) keeps a batch of
// slots; a request submitted while the loop runs is prefilled and joins the
// batch as soon as a slot is free, and leaves it when done, so a consumer
// that keeps submitting keeps the batch full. The KV cache grows by powers
// of two as the rows need it and is dropped when the batch empties.
type Batcher struct {
	m     *Model
	slots int
	log   zerolog.Logger

	in      chan *job
	done    chan struct{}
	started sync.Once
	runErr  error
}

type job struct {
	ctx     context.Context
	req     GenerateRequest
	limit   int
	onToken func(id int)
	res     chan jobResult

	tr   *tracker
	sm   *sampler
	tok  int // the token to feed next
	pos  int // its position
	slot int
}

type jobResult struct {
	res GenerateResult
	err error
}

// NewBatcher makes a Batcher of the given number of slots (the decode batch).
// Of the options only WithLogger applies.
func NewBatcher(m *Model, slots int, opts ...Option) (*Batcher, error) {
	if m == nil {
		return nil, fmt.Errorf("%w: nil model", ErrInvalidOption)
	}
	if slots < 1 || slots > 4096 {
		return nil, fmt.Errorf("%w: %d slots, want 1..4096", ErrInvalidOption, slots)
	}
	o := defaultOptions()
	o.logger = m.log
	if err := applyOptions(&o, opts); err != nil {
		return nil, err
	}
	return &Batcher{m: m, slots: slots, log: o.logger, in: make(chan *job), done: make(chan struct{})}, nil
}

// Submit queues a request and blocks until it is done. onToken, when not
// nil, is called from the decode loop with each token as soon as it is
// final (a token that may begin a stop sequence is held back until that is
// decided). Cancelling ctx ends the request and frees its slot; Submit then
// returns ctx's error. After Run has returned Submit returns ErrClosed.
func (b *Batcher) Submit(ctx context.Context, req GenerateRequest, onToken func(id int)) (GenerateResult, error) {
	limit, err := b.m.validateRequest(req)
	if err != nil {
		return GenerateResult{}, err
	}
	j := &job{ctx: ctx, req: req, limit: limit, onToken: onToken, res: make(chan jobResult, 1)}
	select {
	case b.in <- j:
	case <-ctx.Done():
		return GenerateResult{}, ctx.Err()
	case <-b.done:
		return GenerateResult{}, ErrClosed
	}
	select {
	case r := <-j.res:
		return r.res, r.err
	case <-ctx.Done():
		return GenerateResult{}, ctx.Err()
	}
}

// Run is the decode loop. It returns nil when ctx is cancelled (requests
// still running then fail with ErrClosed), or the backend error that
// stopped it. A Batcher runs once.
func (b *Batcher) Run(ctx context.Context) error {
	first := false
	b.started.Do(func() { first = true })
	if !first {
		return fmt.Errorf("%w: batcher already ran", ErrClosed)
	}
	defer close(b.done)
	err := b.loop(ctx)
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		err = nil
	}
	return err
}

const batcherInitialLen = 64

func (b *Batcher) loop(ctx context.Context) (err error) {
	var (
		st      decodeState
		active  = make([]*job, b.slots)
		pending []*job
		nActive int
	)
	finish := func(j *job, err error) {
		if err == nil {
			if j.onToken != nil {
				for _, id := range j.tr.ready() {
					j.onToken(id)
				}
			}
			j.res <- jobResult{res: GenerateResult{
				IDs: j.tr.ids, FinishReason: j.tr.finish,
				PromptTokens: len(j.req.PromptIDs), CompletionTokens: j.tr.produced,
			}}
		} else {
			j.res <- jobResult{err: err}
		}
		if active[j.slot] == j {
			active[j.slot] = nil
			nActive--
		}
	}
	defer func() {
		reason := ErrClosed
		if err != nil && !errors.Is(err, context.Canceled) {
			reason = err
		}
		for _, j := range active {
			if j != nil {
				finish(j, reason)
			}
		}
		for _, j := range pending {
			j.res <- jobResult{err: reason}
		}
		if st != nil {
			st.release()
		}
	}()
	// accept a token for j; it reports whether j finished.
	accept := func(j *job, logits []float32) bool {
		id := j.sm.next(logits)
		if j.tr.add(id) {
			finish(j, nil)
			return true
		}
		if j.onToken != nil {
			for _, t := range j.tr.ready() {
				j.onToken(t)
			}
		}
		j.tok = id
		return false
	}
	for {
		if nActive == 0 && len(pending) == 0 {
			if st != nil && st.cacheLen() > batcherInitialLen {
				st.release()
				st = nil
			}
			select {
			case j := <-b.in:
				pending = append(pending, j)
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	drain:
		for {
			select {
			case j := <-b.in:
				pending = append(pending, j)
			case <-ctx.Done():
				return ctx.Err()
			default:
				break drain
			}
		}
		// Drop cancelled requests.
		for _, j := range active {
			if j != nil && j.ctx.Err() != nil {
				finish(j, j.ctx.Err())
			}
		}
		kept := pending[:0]
		for _, j := range pending {
			if j.ctx.Err() != nil {
				j.res <- jobResult{err: j.ctx.Err()}
			} else {
				kept = append(kept, j)
			}
		}
		pending = kept
		// Admit pending requests into free slots.
		var joiners []*job
		for s := 0; s < b.slots && len(pending) > 0; s++ {
			if active[s] == nil {
				j := pending[0]
				pending = pending[1:]
				j.pos = len(j.req.PromptIDs) // where its first sampled token goes
				j.slot, j.tr, j.sm = s, newTracker(j.req.Params, b.m.eos(), j.limit), newSampler(j.req.Params)
				active[s] = j
				nActive++
				joiners = append(joiners, j)
			}
		}
		need := 1
		for _, j := range active {
			if j != nil {
				need = max(need, j.pos+1)
			}
		}
		if st == nil {
			st = b.m.newKVState(b.slots, bucketLen(max(need, batcherInitialLen), b.m.maxSeq))
		} else if need > st.cacheLen() {
			t0 := time.Now()
			if err := st.grow(ctx, bucketLen(need, b.m.maxSeq)); err != nil {
				return err
			}
			b.log.Debug().Int("cache_len", st.cacheLen()).Dur("took", time.Since(t0)).Msg("batcher cache grown")
		}
		if len(joiners) > 0 {
			slots := make([]int, len(joiners))
			prompts := make([][]int, len(joiners))
			for i, j := range joiners {
				slots[i], prompts[i] = j.slot, j.req.PromptIDs
			}
			logits, err := st.prefill(ctx, slots, prompts)
			if err != nil {
				return err
			}
			for i, j := range joiners {
				accept(j, logits[i])
			}
		}
		if nActive == 0 {
			continue
		}
		tokens := make([]int, b.slots)
		pos := make([]int, b.slots)
		for s, j := range active {
			if j != nil {
				tokens[s], pos[s] = j.tok, j.pos
			}
		}
		rows, err := st.step(ctx, tokens, pos)
		if err != nil {
			return err
		}
		for s, j := range active {
			if j != nil {
				j.pos++
				accept(j, rows[s])
			}
		}
	}
}
