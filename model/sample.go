package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
)

// Limits and defaults of SamplingParams (DATA_DICTIONARY §3.1, §7.1).
const (
	DefaultMaxTokens = 256
	MaxMaxTokens     = 4096
	MaxTemperature   = 2.0
)

// Finish reasons of a GenerateResult.
const (
	FinishStop   = "stop"
	FinishLength = "length"
)

// SamplingParams control one request's generation.
//
// Temperature 0 is greedy decoding. TopP 0 means 1 (off); TopK 0 means off.
// The same Seed with the same input gives the same output. MaxTokens 0
// means DefaultMaxTokens. Generation stops at a token of EOS (nil: the
// model's eos_token_id), when the output ends with one of StopTokenSeqs (the
// output is cut before it), or when Stop reports stop (the output is cut to
// its first keep tokens); the finish reason is then "stop", and "length"
// at MaxTokens. A prompt plus MaxTokens over the model's context is refused
// (ErrTooLong, "Invalid max_tokens"), not cut short.
type SamplingParams struct {
	MaxTokens     int
	Temperature   float64
	TopP          float64
	TopK          int
	Seed          int64
	StopTokenSeqs [][]int
	EOS           []int
	// Stop, when set, is called after each token with the ids generated so
	// far (EOS excluded); stop=true ends the request and keeps ids[:keep].
	// The text-level stop strings are built on it.
	Stop func(ids []int) (keep int, stop bool)
	// Logprobs records each generated token's log-probability (the result's
	// Logprobs), with the TopLogprobs most likely tokens at its position
	// (0..MaxTopLogprobs; needs Logprobs).
	Logprobs    bool
	TopLogprobs int
}

// Validate checks the ranges of the parameters.
func (p SamplingParams) Validate() error {
	switch {
	case p.MaxTokens < 0 || p.MaxTokens > MaxMaxTokens:
		return fmt.Errorf("%w: Invalid max_tokens", ErrInvalidRequest)
	case p.Temperature < 0 || p.Temperature > MaxTemperature || math.IsNaN(p.Temperature):
		return fmt.Errorf("%w: Temperature out of range", ErrInvalidRequest)
	case p.TopP < 0 || p.TopP > 1 || math.IsNaN(p.TopP):
		return fmt.Errorf("%w: top_p %g outside [0, 1]", ErrInvalidRequest, p.TopP)
	case p.TopK < 0:
		return fmt.Errorf("%w: top_k %d is negative", ErrInvalidRequest, p.TopK)
	}
	for _, s := range p.StopTokenSeqs {
		if len(s) == 0 {
			return fmt.Errorf("%w: empty stop token sequence", ErrInvalidRequest)
		}
	}
	return p.validateLogprobs()
}

// sampler draws tokens for one request.
type sampler struct {
	p   SamplingParams
	rng *rand.Rand
	// scratch
	idx   []int
	probs []float64
	rec   []TokenLogprob // the drawn tokens' logprobs, with Params.Logprobs
}

func newSampler(p SamplingParams) *sampler {
	s := uint64(p.Seed)
	return &sampler{p: p, rng: rand.New(rand.NewPCG(s, s^0x9e3779b97f4a7c15))}
}

// next picks the next token from the logits, recording its logprob when
// asked to.
func (s *sampler) next(logits []float32) int {
	id := s.draw(logits)
	if s.p.Logprobs {
		s.rec = append(s.rec, logprobOf(logits, id, s.p.TopLogprobs))
	}
	return id
}

// draw picks the next token from the logits.
func (s *sampler) draw(logits []float32) int {
	if s.p.Temperature == 0 || s.p.TopK == 1 {
		return argmax(logits)
	}
	// Candidates: tokens whose probability relative to the most likely one
	// is above e^-40 (the rest cannot be drawn in practice), most likely
	// first, ties by id so the order is deterministic.
	inv := 1 / s.p.Temperature
	top := logits[argmax(logits)]
	s.idx = s.idx[:0]
	for i, l := range logits {
		if float64(l-top)*inv > -40 {
			s.idx = append(s.idx, i)
		}
	}
	slices.SortFunc(s.idx, func(a, b int) int {
		la, lb := logits[a], logits[b]
		switch {
		case la > lb:
			return -1
		case la < lb:
			return 1
		}
		return a - b
	})
	cand := s.idx
	if s.p.TopK > 0 && s.p.TopK < len(cand) {
		cand = cand[:s.p.TopK]
	}
	s.probs = s.probs[:0]
	total := 0.0
	for _, i := range cand {
		p := math.Exp(float64(logits[i]-top) * inv)
		s.probs = append(s.probs, p)
		total += p
	}
	if tp := s.p.TopP; tp > 0 && tp < 1 {
		acc := 0.0
		for j, p := range s.probs {
			acc += p / total
			if acc >= tp {
				cand, s.probs = cand[:j+1], s.probs[:j+1]
				break
			}
		}
		total = 0
		for _, p := range s.probs {
			total += p
		}
	}
	r := s.rng.Float64() * total
	for j, p := range s.probs {
		r -= p
		if r < 0 {
			return cand[j]
		}
	}
	return cand[len(cand)-1]
}

func argmax(xs []float32) int {
	best := 0
	for i, x := range xs {
		if x > xs[best] {
			best = i
		}
	}
	return best
}

// tracker follows one request's output: stop conditions, finish reason and
// which tokens may be streamed (those that cannot turn into a stop sequence).
type tracker struct {
	p        SamplingParams
	eos      []int
	limit    int // most tokens to produce
	ids      []int
	produced int
	finish   string
	emitted  int
}

func newTracker(p SamplingParams, eos []int, limit int) *tracker {
	if p.EOS != nil {
		eos = p.EOS
	}
	return &tracker{p: p, eos: eos, limit: limit}
}

// add records a sampled token; it reports whether the request is done.
func (t *tracker) add(id int) bool {
	t.produced++
	if slices.Contains(t.eos, id) {
		t.finish = FinishStop
		return true
	}
	t.ids = append(t.ids, id)
	for _, s := range t.p.StopTokenSeqs {
		if len(t.ids) >= len(s) && slices.Equal(t.ids[len(t.ids)-len(s):], s) {
			t.ids = t.ids[:len(t.ids)-len(s)]
			t.finish = FinishStop
			return true
		}
	}
	if t.p.Stop != nil {
		if keep, stop := t.p.Stop(t.ids); stop {
			t.ids = t.ids[:max(0, min(keep, len(t.ids)))]
			t.finish = FinishStop
			return true
		}
	}
	if t.produced >= t.limit {
		t.finish = FinishLength
		return true
	}
	return false
}

// ready returns the tokens that can be streamed now: all of them once
// finished, otherwise all but a suffix that could begin a stop sequence.
func (t *tracker) ready() []int {
	end := len(t.ids)
	if t.finish == "" {
		hold := 0
		for _, s := range t.p.StopTokenSeqs {
			for n := min(len(s)-1, len(t.ids)); n > hold; n-- {
				if slices.Equal(t.ids[len(t.ids)-n:], s[:n]) {
					hold = n
					break
				}
			}
		}
		end -= hold
	}
	if end <= t.emitted {
		return nil
	}
	out := t.ids[t.emitted:end]
	t.emitted = end
	return out
}
