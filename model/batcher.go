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
	// adapter, on a view of a Batcher (WithAdapter), gives the LoRA
	// adapter its requests run with.
	adapter func(context.Context) (*Adapter, error)
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
	req, err := b.adapted(ctx, req)
	if err != nil {
		return GenerateResult{}, err
	}
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
	if !first || b.adapter != nil { // a view runs on its Batcher's loop
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

// loop runs turns of the batchLoop until ctx ends or the model fails.
func (b *Batcher) loop(ctx context.Context) (err error) {
	l := &batchLoop{b: b, active: make([]*job, b.slots)}
	defer func() { l.shutdown(err) }()
	for {
		if err := l.collect(ctx); err != nil {
			return err
		}
		l.dropCancelled()
		joiners := l.admit()
		if err := l.ensureCache(ctx); err != nil {
			return err
		}
		if err := l.prefill(ctx, joiners); err != nil {
			return err
		}
		if l.nActive == 0 {
			continue
		}
		if err := l.step(ctx); err != nil {
			return err
		}
	}
}

// batchLoop is the state of the batcher's loop: the KV cache, the request
// in each slot, and the requests waiting for one. Each turn collects new
// requests, drops cancelled ones, admits waiting ones into free slots and
// prefills them, then decodes one token for every active slot.
type batchLoop struct {
	b       *Batcher
	st      decodeState
	active  []*job // by slot; nil when free
	pending []*job
	nActive int
}

// finish answers j (its result, or err) and frees its slot.
func (l *batchLoop) finish(j *job, err error) {
	if err == nil {
		if j.onToken != nil {
			for _, id := range j.tr.ready() {
				j.onToken(id)
			}
		}
		j.res <- jobResult{res: GenerateResult{
			IDs: j.tr.ids, FinishReason: j.tr.finish,
			PromptTokens: len(j.req.PromptIDs), CompletionTokens: j.tr.produced,
			Logprobs: j.sm.logprobs(len(j.tr.ids)),
		}}
	} else {
		j.res <- jobResult{err: err}
	}
	if l.active[j.slot] == j {
		l.active[j.slot] = nil
		l.nActive--
	}
}

// shutdown answers every request left with ErrClosed (or the loop's error
// other than a cancelled ctx) and releases the cache.
func (l *batchLoop) shutdown(err error) {
	reason := ErrClosed
	if err != nil && !errors.Is(err, context.Canceled) {
		reason = err
	}
	for _, j := range l.active {
		if j != nil {
			l.finish(j, reason)
		}
	}
	for _, j := range l.pending {
		j.res <- jobResult{err: reason}
	}
	if l.st != nil {
		l.st.release()
	}
}

// accept samples j's next token from logits; it reports whether j finished.
func (l *batchLoop) accept(j *job, logits []float32) bool {
	id := j.sm.next(logits)
	if j.tr.add(id) {
		l.finish(j, nil)
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

// collect takes the requests submitted since the last turn; when idle it
// first shrinks an outgrown cache and waits for one.
func (l *batchLoop) collect(ctx context.Context) error {
	if l.nActive == 0 && len(l.pending) == 0 {
		if l.st != nil && l.st.cacheLen() > batcherInitialLen {
			l.st.release()
			l.st = nil
		}
		select {
		case j := <-l.b.in:
			l.pending = append(l.pending, j)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for {
		select {
		case j := <-l.b.in:
			l.pending = append(l.pending, j)
		case <-ctx.Done():
			return ctx.Err()
		default:
			return nil
		}
	}
}

// dropCancelled answers the requests whose ctx ended, active or waiting.
func (l *batchLoop) dropCancelled() {
	for _, j := range l.active {
		if j != nil && j.ctx.Err() != nil {
			l.finish(j, j.ctx.Err())
		}
	}
	kept := l.pending[:0]
	for _, j := range l.pending {
		if j.ctx.Err() != nil {
			j.res <- jobResult{err: j.ctx.Err()}
		} else {
			kept = append(kept, j)
		}
	}
	l.pending = kept
}

// admit moves waiting requests into free slots and returns them.
func (l *batchLoop) admit() []*job {
	var joiners []*job
	for s := 0; s < l.b.slots && len(l.pending) > 0; s++ {
		if l.active[s] == nil {
			j := l.pending[0]
			l.pending = l.pending[1:]
			j.pos = len(j.req.PromptIDs) // where its first sampled token goes
			j.slot, j.tr, j.sm = s, newTracker(j.req.Params, l.b.m.eos(), j.limit), newSampler(j.req.Params)
			l.active[s] = j
			l.nActive++
			joiners = append(joiners, j)
		}
	}
	return joiners
}

// ensureCache makes the KV cache long enough for every active request's
// next position.
func (l *batchLoop) ensureCache(ctx context.Context) error {
	need := 1
	for _, j := range l.active {
		if j != nil {
			need = max(need, j.pos+1)
		}
	}
	if l.st == nil {
		l.st = l.b.m.newKVState(l.b.slots, bucketLen(max(need, batcherInitialLen), l.b.m.maxSeq))
		return nil
	}
	if need > l.st.cacheLen() {
		t0 := time.Now()
		if err := l.st.grow(ctx, bucketLen(need, l.b.m.maxSeq)); err != nil {
			return err
		}
		l.b.log.Debug().Int("cache_len", l.st.cacheLen()).Dur("took", time.Since(t0)).Msg("batcher cache grown")
	}
	return nil
}

// prefill runs the prompts of the requests just admitted, together, and
// samples their first tokens.
func (l *batchLoop) prefill(ctx context.Context, joiners []*job) error {
	if len(joiners) == 0 {
		return nil
	}
	slots := make([]int, len(joiners))
	prompts := make([][]int, len(joiners))
	for i, j := range joiners {
		slots[i], prompts[i] = j.slot, j.req.PromptIDs
		setAdapter(l.st, j.slot, j.req.Adapter) // a freed slot's last adapter is replaced
	}
	logits, err := l.st.prefill(ctx, slots, prompts)
	if err != nil {
		return err
	}
	for i, j := range joiners {
		l.accept(j, logits[i])
	}
	return nil
}

// step decodes one token for every active slot.
func (l *batchLoop) step(ctx context.Context) error {
	tokens := make([]int, l.b.slots)
	pos := make([]int, l.b.slots)
	for s, j := range l.active {
		if j != nil {
			tokens[s], pos[s] = j.tok, j.pos
		}
	}
	rows, err := l.st.step(ctx, tokens, pos)
	if err != nil {
		return err
	}
	for s, j := range l.active {
		if j != nil {
			j.pos++
			l.accept(j, rows[s])
		}
	}
	return nil
}
