package model

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"sync/atomic"

	"github.com/largeforge/largeforge/model/checkpoint"
)

// The native engine: the decoder of llama.go (the same RMSNorm, rotate-half
// RoPE, grouped-query attention, SwiGLU and LM head, in the same order)
// computed on the CPU with the blocked float32 kernels of kernel.go
// instead of GoMLX graphs. The pure Go GoMLX backend runs the small
// products of decoding (64 rows against a 64-wide layer) at 1–3 GFLOP/s and
// pays for every op it runs; the kernels reach 25–90 GFLOP/s on the same
// shapes. Generation (prefill and decode with the KV cache) and scoring use
// this engine on the pure Go backend; training, Logits and the XLA backend
// use the graphs. Tests hold the two engines to the same logits.
//
// A forward runs every token given to it (all prompts of a prefill, all
// rows of a score call) through each layer as one product per weight,
// rows = Σ tokens; a prompt attends as matrix products over its slot's
// cache (kernel_attend.go); scoring reduces the LM head's logits to
// log-probabilities a chunk of rows at a time (headLogprobs).

// Engine names, for WithEngine and EngineEnv.
const (
	EngineGraph  = "graph"  // GoMLX graphs on the configured backend
	EngineNative = "native" // the hand-written kernels; the default on the pure Go backend
	// EngineEnv selects the generation engine when WithEngine is not given.
	EngineEnv = "LARGEFORGE_ENGINE"
)

// nativeDecoder holds the weights packed for the kernels.
type nativeDecoder struct {
	cfg       checkpoint.Config
	maxSeq    int
	embed     []float32 // [vocab, hidden]
	layers    []nativeLayer
	finalNorm []float32
	lmHead    *packedMatrix
	cos, sin  []float32    // [maxSeq, headDim/2]
	qembed    *quantMatrix // the quantized embedding, in place of embed (quant.go)
}

type nativeLayer struct {
	attnNorm, mlpNorm []float32
	qkv               *packedMatrix // q, k and v stacked
	qkvBias, oBias    []float32     // nil when absent
	o, gateUp, down   *packedMatrix
}

// newNativeDecoder packs the weights the Model holds (fused) for the kernels.
func newNativeDecoder(cfg checkpoint.Config, maxSeq int, w *held[*checkpoint.Tensor], cos, sin []float32) *nativeDecoder {
	e, inter := cfg.HiddenSize, cfg.IntermediateSize
	qd, kvd := cfg.NumHeads*cfg.HeadDim, cfg.NumKVHeads*cfg.HeadDim
	d := &nativeDecoder{
		cfg: cfg, maxSeq: maxSeq, cos: cos, sin: sin,
		embed:     w.dec.Embed.Data,
		finalNorm: w.dec.FinalNorm.Data,
		lmHead:    packMatrix(w.dec.LMHead.Data, cfg.VocabSize, e),
	}
	for l, lw := range w.dec.Layers {
		f := w.fused[l]
		d.layers = append(d.layers, nativeLayer{
			attnNorm: lw.AttnNorm.Data,
			mlpNorm:  lw.MLPNorm.Data,
			qkv:      packMatrix(f.QKV.Data, qd+2*kvd, e),
			qkvBias:  values(f.QKVBias),
			o:        packMatrix(lw.O.Data, e, qd),
			oBias:    values(lw.OBias),
			gateUp:   packMatrix(f.GateUp.Data, 2*inter, e),
			down:     packMatrix(lw.Down.Data, e, inter),
		})
	}
	return d
}

// values is t's data, nil for an absent tensor.
func values(t *checkpoint.Tensor) []float32 {
	if t == nil {
		return nil
	}
	return t.Data
}

// nativeState is a batch of B slots with a KV cache of T positions per
// layer, keys and values each [B, T, kvHeads*headDim]. It implements
// decodeState for the native engine.
type nativeState struct {
	m       *Model // for its closed state
	d       *nativeDecoder
	b, t    int
	k, v    [][]float32 // per layer
	scratch [][]float32 // per part of a forward
	logits  []float32   // the last forward's logits (valid until the next)
	idle    []float32   // the logits returned for idle rows: zeros
	counted int64       // bytes of k and v counted in m.cacheBytes
	// adapters are the LoRA adapters of the slots (nil, or nil for a
	// slot: the base alone), loraScratch their scratch per part (lora.go).
	adapters    []*Adapter
	loraScratch [][]float32
}

func (d *nativeDecoder) newState(b, t int) *nativeState {
	s := &nativeState{d: d, b: b}
	s.alloc(t)
	return s
}

func (s *nativeState) alloc(t int) {
	kvd := s.d.cfg.NumKVHeads * s.d.cfg.HeadDim
	k, v := make([][]float32, s.d.cfg.NumLayers), make([][]float32, s.d.cfg.NumLayers)
	for l := range k {
		k[l], v[l] = make([]float32, s.b*t*kvd), make([]float32, s.b*t*kvd)
		if s.k != nil { // grow: keep each slot's first s.t positions
			for slot := range s.b {
				copy(k[l][slot*t*kvd:], s.k[l][slot*s.t*kvd:(slot+1)*s.t*kvd])
				copy(v[l][slot*t*kvd:], s.v[l][slot*s.t*kvd:(slot+1)*s.t*kvd])
			}
		}
	}
	s.k, s.v, s.t = k, v, t
	s.recount()
}

// recount brings the model's count of cache bytes up to this state's k and v.
func (s *nativeState) recount() {
	if s.m == nil {
		return
	}
	var now int64
	for l := range s.k {
		now += 4 * int64(len(s.k[l])+len(s.v[l]))
	}
	s.m.cacheBytes.Add(now - s.counted)
	s.counted = now
}

func (s *nativeState) cacheLen() int { return s.t }

func (s *nativeState) release() {
	s.k, s.v, s.scratch, s.logits = nil, nil, nil, nil
	if s.m != nil {
		s.m.cacheBytes.Add(-s.counted)
		s.counted = 0
	}
}

func (s *nativeState) grow(_ context.Context, t int) error {
	if t > s.t {
		s.alloc(t)
	}
	return nil
}

// nativeItem is one token to run: at position pos of slot's sequence.
type nativeItem struct {
	slot, pos, token int
	logits           bool // whether its next-token logits are wanted
}

func (s *nativeState) prefill(ctx context.Context, slots []int, prompts [][]int) ([][]float32, error) {
	var items []nativeItem
	for i, p := range prompts {
		if len(p) > s.t {
			return nil, fmt.Errorf("%w: prompt of %d tokens, cache of %d", ErrTooLong, len(p), s.t)
		}
		if len(p) == 0 {
			return nil, fmt.Errorf("%w: empty prompt", ErrTooLong)
		}
		for j, id := range p {
			items = append(items, nativeItem{slot: slots[i], pos: j, token: id, logits: j == len(p)-1})
		}
	}
	return s.forward(ctx, items)
}

// step runs one token per row. A row at position 0 is idle (every real row
// has its prompt in the cache): it is skipped and its logits are zeros.
// The logits returned (by prefill too) are valid until the next call.
func (s *nativeState) step(ctx context.Context, tokens, pos []int) ([][]float32, error) {
	items := make([]nativeItem, 0, s.b)
	for i := range s.b {
		if pos[i] >= s.t {
			return nil, fmt.Errorf("%w: position %d, cache of %d", ErrTooLong, pos[i], s.t)
		}
		if pos[i] > 0 {
			items = append(items, nativeItem{slot: i, pos: pos[i], token: tokens[i], logits: true})
		}
	}
	got, err := s.forward(ctx, items)
	if err != nil {
		return nil, err
	}
	if s.idle == nil {
		s.idle = make([]float32, s.d.cfg.VocabSize)
	}
	rows := make([][]float32, s.b)
	for i := range rows {
		rows[i] = s.idle
	}
	for i, it := range items {
		rows[it.slot] = got[i]
	}
	return rows, nil
}

// forward runs the items through the decoder, writing their keys and values
// into the cache before attending, so items of one slot at increasing
// positions (a prompt) see each other causally. It returns the logits of
// the items that ask for them, in order. The items are split by slot
// between the cores: each part runs the whole decoder on its own rows and
// its own slots' caches, so the parts never wait for each other.
func (s *nativeState) forward(ctx context.Context, items []nativeItem) ([][]float32, error) {
	hs, err := s.hidden(ctx, items)
	if err != nil {
		return nil, err
	}
	// The LM head runs once on all the rows, its columns split between the
	// cores: each reads half of the largest weight, where the parts would
	// each read all of it.
	v := s.d.cfg.VocabSize
	n := len(hs) / s.d.cfg.HiddenSize
	if cap(s.logits) < n*v {
		s.logits = make([]float32, n*v)
	}
	logits := s.logits[:n*v]
	s.d.lmHead.mul(logits, hs, n, nil)
	out := make([][]float32, n)
	for j := range out {
		out[j] = logits[j*v : (j+1)*v : (j+1)*v]
	}
	return out, nil
}

// hidden runs the items through the layers (forward up to the LM head) and
// returns the final hidden states, normalized, of the items that want
// logits, in order, one row of hidden size each.
func (s *nativeState) hidden(ctx context.Context, items []nativeItem) ([]float32, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if s.m != nil && s.m.isClosed() {
		return nil, ErrClosed
	}
	cfg := s.d.cfg
	for _, it := range items {
		if it.token < 0 || it.token >= cfg.VocabSize {
			return nil, fmt.Errorf("%w: token id %d outside the vocabulary of %d", ErrInvalidOption, it.token, cfg.VocabSize)
		}
	}
	parts := s.split(items)
	workers := max(min(runtime.GOMAXPROCS(0), len(parts)), 1)
	for len(s.scratch) < workers { // each worker owns its scratch space
		s.scratch = append(s.scratch, nil)
	}
	if s.adapters != nil {
		for len(s.loraScratch) < workers {
			s.loraScratch = append(s.loraScratch, nil)
		}
	}
	var hs []float32 // the final hidden states of the items that want logits, in order
	if len(parts) <= 1 {
		hs = s.run(items, 0, true)
	} else {
		// Each worker takes the next part when it has run one: a core
		// slowed by other work runs fewer parts instead of holding the
		// others at the join.
		outs := make([][]float32, len(parts))
		var taken atomic.Int64
		forwardTeam.run(workers, func(w int) {
			for p := int(taken.Add(1)) - 1; p < len(parts); p = int(taken.Add(1)) - 1 {
				outs[p] = s.run(parts[p], w, false)
			}
		})
		// Back to the items' order: each part kept its items' relative order.
		e := cfg.HiddenSize
		next := make([]int, len(parts))
		owner := make(map[int]int, len(parts)) // slot -> part
		for w, part := range parts {
			for _, it := range part {
				owner[it.slot] = w
			}
		}
		for _, it := range items {
			if it.logits {
				w := owner[it.slot]
				hs = append(hs, outs[w][next[w]*e:(next[w]+1)*e]...)
				next[w]++
			}
		}
	}
	e := cfg.HiddenSize
	rmsNormRows(hs, hs, s.d.finalNorm, len(hs)/e, e, float32(cfg.RMSNormEps))
	return hs, nil
}

// finePartBytes bounds the weights of a decoder whose forward is split in
// partsPerCore parts a core rather than one: they stay in a core's caches,
// so a part costs no more weight reads, and the parts let a core that other
// work slows (a worker's bus, a sink) take fewer of them. Larger weights
// are read once a core.
const (
	finePartBytes = 4 << 20
	partsPerCore  = 4
)

// layerBytes is the size of the decoder's layer weights as float32.
func (d *nativeDecoder) layerBytes() int {
	cfg := d.cfg
	e, inter := cfg.HiddenSize, cfg.IntermediateSize
	qd, kvd := cfg.NumHeads*cfg.HeadDim, cfg.NumKVHeads*cfg.HeadDim
	return 4 * cfg.NumLayers * (e*(qd+2*kvd) + qd*e + 3*inter*e)
}

// split divides the items by slot in balanced parts, one a core (or
// partsPerCore a core for small weights: finePartBytes), when there is
// enough work to pay for it.
func (s *nativeState) split(items []nativeItem) [][]nativeItem {
	cores := runtime.GOMAXPROCS(0)
	perToken := s.d.lmHead.in * (s.d.lmHead.out + 12*s.d.cfg.NumLayers*s.d.lmHead.in)
	if cores <= 1 || len(items) < 2 || len(items)*perToken < 4*parallelMACs {
		return nil
	}
	nparts := cores
	if s.d.layerBytes() <= finePartBytes {
		nparts = cores * partsPerCore
	}
	count := map[int]int{}
	var order []int
	for _, it := range items {
		if count[it.slot] == 0 {
			order = append(order, it.slot)
		}
		count[it.slot]++
	}
	if len(order) < 2 {
		return nil
	}
	nparts = min(nparts, len(order))
	part := map[int]int{}
	w, filled := 0, 0
	for _, slot := range order {
		part[slot] = w
		filled += count[slot]
		if w < nparts-1 && filled*nparts >= len(items)*(w+1) {
			w++
		}
	}
	parts := make([][]nativeItem, w+1)
	for _, it := range items {
		parts[part[it.slot]] = append(parts[part[it.slot]], it)
	}
	return parts
}

// run is forward on one part of the items up to the LM head, with scratch
// space w; parallel lets its products and attention use every core. It
// returns the final hidden states (before the norm) of the items that want
// logits, one row of hidden size each.
func (s *nativeState) run(items []nativeItem, w int, parallel bool) []float32 {
	d, cfg := s.d, s.d.cfg
	n := len(items)
	e, inter := cfg.HiddenSize, cfg.IntermediateSize
	nh, nkv, hd := cfg.NumHeads, cfg.NumKVHeads, cfg.HeadDim
	qd, kvd := nh*hd, nkv*hd
	qkvd := qd + 2*kvd
	need := n * (2*e + qkvd + qd + 3*inter)
	if cap(s.scratch[w]) < need {
		s.scratch[w] = make([]float32, need)
	}
	buf := s.scratch[w][:need]
	carve := func(size int) []float32 {
		out := buf[:size:size]
		buf = buf[size:]
		return out
	}
	x, h := carve(n*e), carve(n*e)
	qkv, att := carve(n*qkvd), carve(n*qd)
	gu, act := carve(n*2*inter), carve(n*inter)
	for i, it := range items {
		d.embedRow(x[i*e:(i+1)*e], it.token)
	}
	eps := float32(cfg.RMSNormEps)
	for l := range d.layers {
		lw := &d.layers[l]
		rmsNormRows(h, x, lw.attnNorm, n, e, eps)
		lw.qkv.mulOn(qkv, h, n, lw.qkvBias, parallel)
		s.loraAdd(w, l, loraQKV, qkv, h, items)
		kc, vc := s.k[l], s.v[l]
		for i, it := range items {
			row := qkv[i*qkvd : (i+1)*qkvd]
			cos := d.cos[it.pos*hd/2 : (it.pos+1)*hd/2]
			sin := d.sin[it.pos*hd/2 : (it.pos+1)*hd/2]
			for hh := range nh + nkv { // queries and keys
				ropeRow(row[hh*hd:(hh+1)*hd], cos, sin)
			}
			at := (it.slot*s.t + it.pos) * kvd
			copy(kc[at:at+kvd], row[qd:qd+kvd])
			copy(vc[at:at+kvd], row[qd+kvd:])
		}
		s.attend(l, items, qkv, att, parallel)
		lw.o.mulOn(h, att, n, lw.oBias, parallel)
		s.loraAdd(w, l, loraO, h, att, items)
		addTo(x, h)
		rmsNormRows(h, x, lw.mlpNorm, n, e, eps)
		lw.gateUp.mulOn(gu, h, n, nil, parallel)
		s.loraAdd(w, l, loraGateUp, gu, h, items)
		parallelRows(parallel, n, n*inter, func(lo, hi int) {
			for i := lo; i < hi; i++ {
				siluMul(act[i*inter:(i+1)*inter], gu[i*2*inter:i*2*inter+inter], gu[i*2*inter+inter:(i+1)*2*inter])
			}
		})
		lw.down.mulOn(h, act, n, nil, parallel)
		s.loraAdd(w, l, loraDown, h, act, items)
		addTo(x, h)
	}
	// The final hidden states of the items that want logits.
	var hs []float32
	for i, it := range items {
		if it.logits {
			hs = append(hs, x[i*e:(i+1)*e]...)
		}
	}
	return hs
}

// tokenLogprobs returns for each row log p(row[j] | row[:j]) for j from
// first[i] to the row's end, running every row once through the decoder
// (with adapter a when not nil).
func (d *nativeDecoder) tokenLogprobs(ctx context.Context, m *Model, rows [][]int, first []int, a *Adapter) ([][]float64, error) {
	longest := 1
	var items []nativeItem
	var next []int // the token each counted item predicts
	for i, row := range rows {
		longest = max(longest, len(row))
		for j := range len(row) - 1 { // the last token predicts nothing we score
			counted := j >= first[i]-1
			items = append(items, nativeItem{slot: i, pos: j, token: row[j], logits: counted})
			if counted {
				next = append(next, row[j+1])
			}
		}
	}
	st := d.newState(len(rows), longest)
	st.m = m
	defer st.release()
	for slot := range rows {
		setAdapter(st, slot, a)
	}
	hs, err := st.hidden(ctx, items)
	if err != nil {
		return nil, err
	}
	lps := d.headLogprobs(hs, next)
	out := make([][]float64, len(rows))
	k := 0
	for _, it := range items {
		if it.logits {
			out[it.slot] = append(out[it.slot], lps[k])
			k++
		}
	}
	return out, nil
}

// scoreChunk rows of logits (8 MiB at a vocabulary of 32,000) are computed
// and reduced to log-probabilities at a time: scoring never holds the
// logits of all its tokens.
const scoreChunk = 64

// headLogprobs returns log softmax(hs[r] · lmHeadᵀ)[next[r]] for each row r
// of the final hidden states hs, chunks of rows split between the cores.
func (d *nativeDecoder) headLogprobs(hs []float32, next []int) []float64 {
	e, v := d.cfg.HiddenSize, d.cfg.VocabSize
	n := len(next)
	out := make([]float64, n)
	chunks := (n + scoreChunk - 1) / scoreChunk
	parallelRows(true, chunks, n*e*v, func(lo, hi int) {
		logits := make([]float32, scoreChunk*v)
		for c := lo; c < hi; c++ {
			r0, r1 := c*scoreChunk, min((c+1)*scoreChunk, n)
			d.lmHead.mulOn(logits, hs[r0*e:r1*e], r1-r0, nil, false)
			for r := r0; r < r1; r++ {
				row := logits[(r-r0)*v : (r-r0+1)*v]
				best, sum := logSumExpParts(row)
				out[r] = float64(row[next[r]]-best) - math.Log(sum)
			}
		}
	})
	return out
}

// attend computes each item's attention output [heads*headDim] over its
// slot's cache up to its own position (within the sliding window): runs of
// a slot's consecutive positions as matrix products (kernel_attend.go),
// the other items (decode steps) one query at a time.
func (s *nativeState) attend(l int, items []nativeItem, qkv, att []float32, parallel bool) {
	cfg := s.d.cfg
	a := attnShapeOf(cfg)
	nh, nkv, hd, qd, kvd, qkvd, grp := a.nh, a.nkv, a.hd, a.qd, a.kvd, a.qkvd, a.grp
	kc, vc := s.k[l], s.v[l]
	runs, single := attnRuns(items)
	if len(runs) > 0 {
		s.attendRuns(l, runs, qkv, att, parallel)
	}
	work := 0
	for _, i := range single {
		work += (items[i].pos + 1) * nh * hd
	}
	parallelRows(parallel, len(single), work, func(lo, hi int) {
		scores := make([]float32, s.t)
		for _, i := range single[lo:hi] {
			it := items[i]
			first := 0
			if cfg.SlidingWindow > 0 {
				first = max(0, it.pos-cfg.SlidingWindow+1)
			}
			n := it.pos + 1 - first
			base := (it.slot*s.t + first) * kvd
			// Query heads kh*grp .. kh*grp+grp-1 share KV head kh.
			for kh := range nkv {
				off := base + kh*hd
				qs := qkv[i*qkvd+kh*grp*hd : i*qkvd+(kh+1)*grp*hd]
				for g := range grp {
					q := qs[g*hd : (g+1)*hd]
					row := scores[:n]
					for j := range row {
						row[j] = dotf(q, kc[off+j*kvd:off+j*kvd+hd]) * a.scale
					}
					softmaxRow(row)
					weightedSum(att[i*qd+(kh*grp+g)*hd:i*qd+(kh*grp+g+1)*hd], row, vc[off:], kvd)
				}
			}
		}
	})
}

// attnShape holds the attention's dimensions.
type attnShape struct {
	nh, nkv, hd   int // query heads, KV heads, head size
	qd, kvd, qkvd int // widths of the queries, of keys (or values), of a q|k|v row
	grp           int // query heads per KV head
	scale         float32
}

func attnShapeOf(cfg checkpoint.Config) attnShape {
	nh, nkv, hd := cfg.NumHeads, cfg.NumKVHeads, cfg.HeadDim
	return attnShape{
		nh: nh, nkv: nkv, hd: hd,
		qd: nh * hd, kvd: nkv * hd, qkvd: (nh + 2*nkv) * hd,
		grp:   nh / nkv,
		scale: float32(1 / math.Sqrt(float64(hd))),
	}
}

// softmaxRow sets p to softmax(p), in place.
func softmaxRow(p []float32) {
	_, sum := shiftedExp(p, p)
	inv := float32(1 / sum)
	for j := range p {
		p[j] *= inv
	}
}

// dotf is the dot product of two equally long vectors, with four
// accumulators so the additions do not wait on each other.
func dotf(a, b []float32) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(a); i += 4 {
		s0 += a[i] * b[i]
		s1 += a[i+1] * b[i+1]
		s2 += a[i+2] * b[i+2]
		s3 += a[i+3] * b[i+3]
	}
	for ; i < len(a); i++ {
		s0 += a[i] * b[i]
	}
	return (s0 + s1) + (s2 + s3)
}

// weightedSum sets out = Σ_j p[j]·v[j*stride : j*stride+len(out)], eight
// output values at a time held in locals (a store and reload per term
// would chain every addition through memory).
func weightedSum(out, p, v []float32, stride int) {
	d := len(out)
	c := 0
	for ; c+8 <= d; c += 8 {
		var a0, a1, a2, a3, a4, a5, a6, a7 float32
		for j, pj := range p {
			r := v[j*stride+c : j*stride+c+8]
			a0 += pj * r[0]
			a1 += pj * r[1]
			a2 += pj * r[2]
			a3 += pj * r[3]
			a4 += pj * r[4]
			a5 += pj * r[5]
			a6 += pj * r[6]
			a7 += pj * r[7]
		}
		out[c], out[c+1], out[c+2], out[c+3] = a0, a1, a2, a3
		out[c+4], out[c+5], out[c+6], out[c+7] = a4, a5, a6, a7
	}
	for ; c < d; c++ {
		var a float32
		for j, pj := range p {
			a += pj * v[j*stride+c]
		}
		out[c] = a
	}
}

// shiftedExp sets dst = e^(src - max(src)) and returns that max and the
// sum of dst: the parts of a softmax and of a log-sum-exp. dst may be src.
func shiftedExp(dst, src []float32) (best float32, sum float64) {
	best = src[0]
	for _, v := range src {
		if v > best {
			best = v
		}
	}
	dst = dst[:len(src)]
	for j, v := range src {
		dst[j] = v - best
	}
	expRow(dst, dst)
	for _, p := range dst {
		sum += float64(p)
	}
	return best, sum
}

// expRow sets dst[i] = e^src[i] in float32 (relative error below 1e-7),
// for softmax and SiLU. One loop over a row lets the CPU overlap the
// elements, where a call per element (math.Exp, in float64 in full) costs
// several times more.
func expRow(dst, src []float32) {
	const (
		log2e, ln2 = 1.4426950408889634, 0.6931471805599453
		// Adding 1.5·2^52 rounds to an integer (Go does not reassociate
		// float arithmetic).
		round = 1.5 * (1 << 52)
	)
	dst = dst[:len(src)]
	for i, x := range src {
		if x < -87.3 { // e^x is below float32's smallest normal
			dst[i] = 0
			continue
		}
		xd := float64(min(x, 88.8)) // beyond float32's range the conversion gives +Inf
		n := (xd*log2e + round) - round
		r := xd - n*ln2 // |r| <= ln2/2
		r2 := r * r
		// The Taylor series of e^r to degree 7, by Estrin's scheme.
		p := (1 + r) + r2*((1.0/2+r*(1.0/6))+r2*((1.0/24+r*(1.0/120))+r2*(1.0/720+r*(1.0/5040))))
		dst[i] = float32(p * math.Float64frombits(uint64(int64(n)+1023)<<52))
	}
}

// ropeRow rotates one head's vector in place, rotate-half layout.
func ropeRow(x, cos, sin []float32) {
	half := len(x) / 2
	for i := range half {
		a, b := x[i], x[i+half]
		x[i] = a*cos[i] - b*sin[i]
		x[i+half] = b*cos[i] + a*sin[i]
	}
}

// rmsNormRows sets dst[r] = src[r] / sqrt(mean(src[r]²) + eps) · w for n rows of width e.
func rmsNormRows(dst, src, w []float32, n, e int, eps float32) {
	rmsNormSave(dst, nil, src, w, n, e, eps)
}

func addTo(x, y []float32) {
	for i, v := range y {
		x[i] += v
	}
}

// parallelRows splits rows [0, n) between the cores when parallel is set
// and work (a rough count of operations) is large enough to pay for it.
func parallelRows(parallel bool, n, work int, f func(lo, hi int)) {
	workers := min(runtime.GOMAXPROCS(0), n)
	if !parallel || work < parallelMACs || workers <= 1 {
		f(0, n)
		return
	}
	forwardTeam.run(workers, func(w int) { f(n*w/workers, n*(w+1)/workers) })
}
