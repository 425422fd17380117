package model

import (
	"context"
	"fmt"
	"math"

	"github.com/gomlx/gomlx/pkg/core/dtypes"
	. "github.com/gomlx/gomlx/pkg/core/graph" //nolint:revive,staticcheck // the GoMLX convention for graph code
	"github.com/gomlx/gomlx/pkg/core/shapes"
	"github.com/gomlx/gomlx/pkg/core/tensors"
)

// kvState is a batch of B rows (slots) with a KV cache of T positions per
// layer: keys [B, kvHeads, T, headDim] and values [B, kvHeads, headDim, T]
// (the layouts the pure Go backend multiplies without transposing). A
// row's cache is zero past its last written position, so a decode step
// writes its new key and value with a scatter-add, in place on the donated
// cache buffer. Rows are independent:
// each has its own position, so requests can join and leave (continuous
// batching). The compiled graphs are keyed by (B, T) buckets.
// decodeState is a batch of rows with a KV cache, run by one engine: the
// graph kvState or the nativeState.
type decodeState interface {
	cacheLen() int
	grow(ctx context.Context, t int) error
	prefill(ctx context.Context, slots []int, prompts [][]int) ([][]float32, error)
	step(ctx context.Context, tokens, pos []int) ([][]float32, error)
	release()
}

// newKVState returns a state of b rows and t cache positions on the
// model's generation engine.
func (m *Model) newKVState(b, t int) decodeState {
	return m.newStateOn(m.engine, b, t)
}

func (m *Model) newStateOn(engine string, b, t int) decodeState {
	if engine == EngineNative && m.native != nil {
		s := m.native.newState(b, t)
		s.m = m
		s.recount()
		return s
	}
	return m.newGraphState(b, t)
}

type kvState struct {
	m       *Model
	b, t    int
	caches  []*tensors.Tensor // k0, v0, k1, v1, ...
	counted int64             // bytes counted in m.cacheBytes
}

func (m *Model) newGraphState(b, t int) *kvState {
	s := &kvState{m: m, b: b, t: t}
	s.caches = s.zeros(t)
	s.counted = s.bytes(t)
	m.cacheBytes.Add(s.counted)
	return s
}

// bytes is the size of the caches at t positions.
func (s *kvState) bytes(t int) int64 {
	return 4 * int64(2*s.m.cfg.NumLayers*s.b*s.m.cfg.NumKVHeads*s.m.cfg.HeadDim*t)
}

// cacheDims are the dimensions of cache i (even: keys, odd: values).
func (s *kvState) cacheDims(i, t int) []int {
	kv, d := s.m.cfg.NumKVHeads, s.m.cfg.HeadDim
	if i%2 == 0 {
		return []int{s.b, kv, t, d}
	}
	return []int{s.b, kv, d, t}
}

func (s *kvState) cacheLen() int { return s.t }

func (s *kvState) zeros(t int) []*tensors.Tensor {
	c := make([]*tensors.Tensor, 2*s.m.cfg.NumLayers)
	for i := range c {
		c[i] = tensors.FromShape(shapes.Make(dtypes.Float32, s.cacheDims(i, t)...))
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
	s.m.cacheBytes.Add(-s.counted)
	s.counted = 0
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
	in, err := s.donated()
	if err != nil {
		return err
	}
	out, err := s.m.run(ctx, graphKey{kind: "grow", a: b, b: old, c: t}, false, func(g *Graph, _ *Weights) []*Node {
		res := make([]*Node, nl)
		for i := range res {
			c := param(g, fmt.Sprintf("cache%d", i), dtypes.Float32, s.cacheDims(i, old)...)
			axis := 2 + i%2
			dims := s.cacheDims(i, t-old)
			res[i] = Concatenate([]*Node{c, Zeros(g, shapes.Make(dtypes.Float32, dims...))}, axis)
		}
		return res
	}, in...)
	if err != nil {
		s.caches = s.zeros(s.t) // the donated caches are gone
		return err
	}
	s.caches, s.t = out, t
	now := s.bytes(t)
	s.m.cacheBytes.Add(now - s.counted)
	s.counted = now
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
		h := decoderStack(cfg, w, t, positions, causalAttention(cfg, func(l int, k, v *Node) {
			kvs[2*l] = TransposeAllAxes(k, 0, 2, 1, 3)   // [n, kv, c, d]
			kvs[2*l+1] = TransposeAllAxes(v, 0, 2, 3, 1) // [n, kv, d, c]
		}))
		h = Gather(h, li) // [n, hidden]
		return append([]*Node{linear(h, w.LMHead, nil)}, kvs...)
	}, m.ints(toks, n, c), m.ints(last, n, 2))
	if err != nil {
		return nil, err
	}
	logits, err := float32s(res[0])
	if err != nil {
		return nil, err
	}
	// Insert rows: slot b takes prefill row src[b] (its first lens[b]
	// positions, zeros after them) when lens[b] > 0.
	src := make([]int32, s.b)
	lens := make([]int32, s.b)
	for i, slot := range slots {
		src[slot], lens[slot] = int32(i), int32(len(prompts[i]))
	}
	b, tt := s.b, s.t
	in, err := s.donated()
	if err != nil {
		return nil, err
	}
	args := append(in, tensorsAsAny(res[1:])...)
	args = append(args, m.ints(src, b, 1), m.ints(lens, b, 1, 1, 1))
	out, err := m.run(ctx, graphKey{kind: "insert", a: b, b: tt, c: n, d: c}, false, func(g *Graph, _ *Weights) []*Node {
		caches := make([]*Node, nl)
		news := make([]*Node, nl)
		for i := range caches {
			caches[i] = param(g, fmt.Sprintf("cache%d", i), dtypes.Float32, s.cacheDims(i, tt)...)
		}
		for i := range news {
			dims := s.cacheDims(i, c)
			dims[0] = n
			news[i] = param(g, fmt.Sprintf("new%d", i), dtypes.Float32, dims...)
		}
		srcN := param(g, "src", dtypes.Int32, b, 1)
		lensN := param(g, "lens", dtypes.Int32, b, 1, 1, 1)
		for i := range caches {
			dims := s.cacheDims(i, tt)
			axis := 2 + i%2
			placed := Gather(news[i], srcN) // [b, ...c...]
			if tt > c {
				zd := s.cacheDims(i, tt-c)
				placed = Concatenate([]*Node{placed, Zeros(g, shapes.Make(dtypes.Float32, zd...))}, axis)
			}
			full := shapes.Make(dtypes.Int32, dims...)
			lensFull := BroadcastToDims(lensN, dims...)
			keep := LessThan(Iota(g, full, axis), lensFull)
			placed = Where(keep, placed, ZerosLike(placed))
			caches[i] = Where(GreaterThan(lensFull, ZerosLike(lensFull)), placed, caches[i])
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
	// Scatter indices of the new keys (b, h, pos) and values (b, h, d, pos).
	kIdx := make([]int32, 0, b*kv*3)
	vIdx := make([]int32, 0, b*kv*d*4)
	for i := range b {
		for h := range kv {
			kIdx = append(kIdx, int32(i), int32(h), ps[i])
			for j := range d {
				vIdx = append(vIdx, int32(i), int32(h), int32(j), ps[i])
			}
		}
	}
	args := append(in, m.ints(toks, b, 1), m.ints(ps, b, 1),
		m.ints(kIdx, b, kv, 3), m.ints(vIdx, b, kv, d, 4))
	res, err := m.run(ctx, graphKey{kind: "decode", a: b, b: tt}, true, func(g *Graph, w *Weights) []*Node {
		caches := make([]*Node, nl)
		for i := range caches {
			caches[i] = param(g, fmt.Sprintf("cache%d", i), dtypes.Float32, s.cacheDims(i, tt)...)
		}
		t := param(g, "tokens", dtypes.Int32, b, 1)
		p := param(g, "pos", dtypes.Int32, b, 1)
		kIdxN := param(g, "kidx", dtypes.Int32, b, kv, 3)
		vIdxN := param(g, "vidx", dtypes.Int32, b, kv, d, 4)
		grp := cfg.NumHeads / kv
		// Per step, shared by the layers: the additive mask [B, kv, grp, T]
		// (full shape, so the layers' ops need no broadcasting).
		cols := Iota(g, shapes.Make(dtypes.Int32, b, tt), 1)
		pb := BroadcastToDims(p, b, tt)
		visible := LessOrEqual(cols, pb)
		if cfg.SlidingWindow > 0 {
			visible = And(visible, GreaterThan(cols, SubScalar(pb, cfg.SlidingWindow)))
		}
		bias := Where(visible, Zeros(g, shapes.Make(dtypes.Float32, b, tt)), Scalar(g, dtypes.Float32, -1e30))
		bias = BroadcastToDims(Reshape(bias, b, 1, 1, tt), b, kv, grp, tt)
		scale := 1 / math.Sqrt(float64(d))
		outs := make([]*Node, 1, 1+nl)
		attend := func(l int, q, k, v *Node) *Node {
			// C = 1: [B, 1, H, D] is [B, kv, grp, D] as laid out.
			q = MulScalar(Reshape(q, b, kv, grp, d), scale)
			// The cache is zero at each row's position: adding is writing,
			// in place on the donated buffer.
			kc := ScatterSum(caches[2*l], kIdxN, Reshape(k, b, kv, d), true, true)
			vc := ScatterSum(caches[2*l+1], vIdxN, Reshape(v, b, kv, d), true, true)
			outs = append(outs, kc, vc)
			scores := Add(DotGeneral(q, []int{3}, []int{0, 1}, kc, []int{3}, []int{0, 1}), bias) // [B, kv, grp, T]
			probs := Softmax(scores, -1)
			out := DotGeneral(probs, []int{3}, []int{0, 1}, vc, []int{3}, []int{0, 1}) // [B, kv, grp, D]
			return Reshape(out, b, 1, cfg.NumHeads*d)
		}
		h := decoderStack(cfg, w, t, p, attend)
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
