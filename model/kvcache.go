package model

import (
	"context"
	"fmt"

	"github.com/gomlx/gomlx/pkg/core/dtypes"
	. "github.com/gomlx/gomlx/pkg/core/graph" //nolint:revive,staticcheck // the GoMLX convention for graph code
	"github.com/gomlx/gomlx/pkg/core/shapes"
	"github.com/gomlx/gomlx/pkg/core/tensors"
)

// kvState is a batch of B rows (slots) with a KV cache of T positions per
// layer: keys and values [B, T, kvHeads, headDim]. Rows are independent:
// each has its own position, so requests can join and leave (continuous
// batching). The compiled graphs are keyed by (B, T) buckets.
type kvState struct {
	m      *Model
	b, t   int
	caches []*tensors.Tensor // k0, v0, k1, v1, ...
}

func (m *Model) newKVState(b, t int) *kvState {
	s := &kvState{m: m, b: b, t: t}
	s.caches = s.zeros(t)
	return s
}

func (s *kvState) cacheDims(t int) []int {
	return []int{s.b, t, s.m.cfg.NumKVHeads, s.m.cfg.HeadDim}
}

func (s *kvState) zeros(t int) []*tensors.Tensor {
	c := make([]*tensors.Tensor, 2*s.m.cfg.NumLayers)
	for i := range c {
		c[i] = tensors.FromShape(shapes.Make(dtypes.Float32, s.cacheDims(t)...))
	}
	return c
}

func (s *kvState) release() {
	for _, c := range s.caches {
		if c != nil {
			_ = c.FinalizeAll()
		}
	}
	s.caches = nil
}

// donated hands the caches to the next graph run, which replaces them.
func (s *kvState) donated() ([]any, error) {
	out := make([]any, len(s.caches))
	for i, c := range s.caches {
		if !c.IsOnDevice(0) {
			out[i] = c // host zeros: uploaded by the run
			continue
		}
		d, err := DonateTensorBuffer(c, s.m.backend, 0)
		if err != nil {
			return nil, fmt.Errorf("%w: donate kv cache: %w", ErrBackend, err)
		}
		out[i] = d
	}
	return out, nil
}

// grow enlarges the cache to t positions, keeping what is there.
func (s *kvState) grow(ctx context.Context, t int) error {
	if t <= s.t {
		return nil
	}
	b, old, nl := s.b, s.t, len(s.caches)
	kv, d := s.m.cfg.NumKVHeads, s.m.cfg.HeadDim
	in, err := s.donated()
	if err != nil {
		return err
	}
	out, err := s.m.run(ctx, graphKey{kind: "grow", a: b, b: old, c: t}, false, func(g *Graph, _ *Weights) []*Node {
		res := make([]*Node, nl)
		for i := range res {
			c := param(g, fmt.Sprintf("cache%d", i), dtypes.Float32, b, old, kv, d)
			res[i] = Concatenate([]*Node{c, Zeros(g, shapes.Make(dtypes.Float32, b, t-old, kv, d))}, 1)
		}
		return res
	}, in...)
	if err != nil {
		s.caches = s.zeros(s.t) // the donated caches are gone
		return err
	}
	s.caches, s.t = out, t
	return nil
}

// prefill runs the prompts (at most B) through the model from position 0
// and writes their keys and values into the given slots. It returns the
// logits of each prompt's last token.
func (s *kvState) prefill(ctx context.Context, slots []int, prompts [][]int) ([][]float32, error) {
	m := s.m
	longest := 1
	for _, p := range prompts {
		longest = max(longest, len(p))
	}
	if longest > s.t {
		return nil, fmt.Errorf("%w: prompt of %d tokens, cache of %d", ErrTooLong, longest, s.t)
	}
	n, c := pow2(len(prompts), 1), min(pow2(longest, 8), s.t)
	toks := make([]int32, n*c)
	last := make([]int32, n*2)
	for i, p := range prompts {
		for j, id := range p {
			toks[i*c+j] = int32(id)
		}
		last[2*i], last[2*i+1] = int32(i), int32(len(p)-1)
	}
	for i := len(prompts); i < n; i++ {
		last[2*i] = int32(i)
	}
	cfg := m.cfg
	nl := 2 * cfg.NumLayers
	res, err := m.run(ctx, graphKey{kind: "prefill", a: n, b: c}, true, func(g *Graph, w *Weights) []*Node {
		t := param(g, "tokens", dtypes.Int32, n, c)
		li := param(g, "last", dtypes.Int32, n, 2)
		positions := Iota(g, shapes.Make(dtypes.Int32, n, c), 1)
		kvs := make([]*Node, nl)
		h := decoderStack(cfg, w, t, positions, causalMask(g, cfg, n, c), func(l int, k, v *Node) (*Node, *Node) {
			kvs[2*l], kvs[2*l+1] = k, v
			return k, v
		})
		h = Gather(h, li) // [n, hidden]
		return append([]*Node{linear(h, w.LMHead, nil)}, kvs...)
	}, int32Tensor(toks, n, c), int32Tensor(last, n, 2))
	if err != nil {
		return nil, err
	}
	logits, err := float32s(res[0])
	if err != nil {
		return nil, err
	}
	// Insert rows: slot b takes prefill row src[b] when sel[b] is 1.
	src := make([]int32, s.b)
	sel := make([]int32, s.b)
	for i, slot := range slots {
		src[slot], sel[slot] = int32(i), 1
	}
	b, tt, kv, d := s.b, s.t, cfg.NumKVHeads, cfg.HeadDim
	in, err := s.donated()
	if err != nil {
		return nil, err
	}
	args := append(in, tensorsAsAny(res[1:])...)
	args = append(args, int32Tensor(src, b), int32Tensor(sel, b))
	out, err := m.run(ctx, graphKey{kind: "insert", a: b, b: tt, c: n, d: c}, false, func(g *Graph, _ *Weights) []*Node {
		caches := make([]*Node, nl)
		news := make([]*Node, nl)
		for i := range caches {
			caches[i] = param(g, fmt.Sprintf("cache%d", i), dtypes.Float32, b, tt, kv, d)
		}
		for i := range news {
			news[i] = param(g, fmt.Sprintf("new%d", i), dtypes.Float32, n, c, kv, d)
		}
		srcN := param(g, "src", dtypes.Int32, b)
		selN := param(g, "sel", dtypes.Int32, b)
		cols := Iota(g, shapes.Make(dtypes.Int32, b, tt, kv, d), 1)
		rows := BroadcastToDims(Reshape(selN, b, 1, 1, 1), b, tt, kv, d)
		mask := And(Equal(rows, OnesLike(rows)), LessThan(cols, Scalar(g, dtypes.Int32, c)))
		for i := range caches {
			placed := Gather(news[i], InsertAxes(srcN, -1)) // [b, c, kv, d]
			if tt > c {
				placed = Concatenate([]*Node{placed, Zeros(g, shapes.Make(dtypes.Float32, b, tt-c, kv, d))}, 1)
			}
			caches[i] = Where(mask, placed, caches[i])
		}
		return caches
	}, args...)
	for _, r := range res[1:] {
		_ = r.FinalizeAll()
	}
	if err != nil {
		s.caches = s.zeros(s.t)
		return nil, err
	}
	s.caches = out
	v := cfg.VocabSize
	rowsOut := make([][]float32, len(prompts))
	for i := range prompts {
		rowsOut[i] = logits[i*v : (i+1)*v : (i+1)*v]
	}
	return rowsOut, nil
}

// step feeds one token per row at the row's position, writes its key and
// value into the cache and returns the next-token logits of every row.
// Rows that are idle can be given any token at position 0.
func (s *kvState) step(ctx context.Context, tokens, pos []int) ([][]float32, error) {
	m := s.m
	cfg := m.cfg
	b, tt, nl := s.b, s.t, 2*cfg.NumLayers
	kv, d := cfg.NumKVHeads, cfg.HeadDim
	toks := make([]int32, b)
	ps := make([]int32, b)
	for i := range b {
		toks[i], ps[i] = int32(tokens[i]), int32(pos[i])
		if pos[i] >= tt {
			return nil, fmt.Errorf("%w: position %d, cache of %d", ErrTooLong, pos[i], tt)
		}
	}
	in, err := s.donated()
	if err != nil {
		return nil, err
	}
	args := append(in, int32Tensor(toks, b, 1), int32Tensor(ps, b, 1))
	res, err := m.run(ctx, graphKey{kind: "decode", a: b, b: tt}, true, func(g *Graph, w *Weights) []*Node {
		caches := make([]*Node, nl)
		for i := range caches {
			caches[i] = param(g, fmt.Sprintf("cache%d", i), dtypes.Float32, b, tt, kv, d)
		}
		t := param(g, "tokens", dtypes.Int32, b, 1)
		p := param(g, "pos", dtypes.Int32, b, 1)
		cols := Iota(g, shapes.Make(dtypes.Int32, b, tt), 1)
		pb := BroadcastToDims(p, b, tt)
		mask := LessOrEqual(cols, pb)
		if cfg.SlidingWindow > 0 {
			mask = And(mask, GreaterThan(cols, SubScalar(pb, cfg.SlidingWindow)))
		}
		write := BroadcastToDims(Reshape(Equal(cols, pb), b, tt, 1, 1), b, tt, kv, d)
		outs := make([]*Node, 1, 1+nl)
		h := decoderStack(cfg, w, t, p, Reshape(mask, b, 1, tt), func(l int, k, v *Node) (*Node, *Node) {
			kc := Where(write, BroadcastToDims(k, b, tt, kv, d), caches[2*l])
			vc := Where(write, BroadcastToDims(v, b, tt, kv, d), caches[2*l+1])
			outs = append(outs, kc, vc)
			return kc, vc
		})
		outs[0] = linear(Reshape(h, b, cfg.HiddenSize), w.LMHead, nil)
		return outs
	}, args...)
	if err != nil {
		s.caches = s.zeros(s.t)
		return nil, err
	}
	s.caches = res[1:]
	logits, err := float32s(res[0])
	if err != nil {
		return nil, err
	}
	v := cfg.VocabSize
	rows := make([][]float32, b)
	for i := range rows {
		rows[i] = logits[i*v : (i+1)*v : (i+1)*v]
	}
	return rows, nil
}

func tensorsAsAny(ts []*tensors.Tensor) []any {
	out := make([]any, len(ts))
	for i, t := range ts {
		out[i] = t
	}
	return out
}
