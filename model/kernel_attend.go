package model

// Attention over a prompt as matrix products. A run of items of one slot at
// consecutive positions (a prompt in prefill, a row in scoring) attends to
// its slot's cache with the 4x16 micro-kernel of kernel.go instead of a dot
// product per key: per KV head, Q·Kᵀ for a chunk of queries against the
// keys they may see, the causal (and sliding-window) softmax per row, then
// P·V. Rows of one chunk stop at their own position; whole 16-key blocks
// past a row block's last position are skipped.

const (
	// attnMinRun is the shortest run of one slot's consecutive positions
	// that attends as matrix products; shorter runs (decode steps) take
	// the per-item path. A variable so tests can force either path.
	attnMinRunDefault = 8
	// attnChunk queries (a multiple of blockRows) share one pass over their keys.
	attnChunk = 64
)

var attnMinRun = attnMinRunDefault

// attnRun is items [i0, i0+n) of one slot at positions p0 .. p0+n-1.
type attnRun struct {
	i0, n, slot, p0 int
}

// attnRuns splits the items into runs of at least attnMinRun consecutive
// positions of one slot, and the indexes of the items outside them.
func attnRuns(items []nativeItem) (runs []attnRun, single []int) {
	for i := 0; i < len(items); {
		j := i + 1
		for j < len(items) && items[j].slot == items[i].slot && items[j].pos == items[j-1].pos+1 {
			j++
		}
		if j-i >= attnMinRun {
			runs = append(runs, attnRun{i0: i, n: j - i, slot: items[i].slot, p0: items[i].pos})
		} else {
			for k := i; k < j; k++ {
				single = append(single, k)
			}
		}
		i = j
	}
	return runs, single
}

// attnTask is one chunk of a run's queries for one KV head.
type attnTask struct {
	run       attnRun
	kh, q0, q int // KV head; queries [q0, q0+q) of the run
}

// attnScratch is one worker's space for attendChunk.
type attnScratch struct {
	q, kp, v, s, o []float32
}

func grown(b []float32, n int) []float32 {
	if cap(b) < n {
		return make([]float32, n)
	}
	return b[:n]
}

// attendChunk computes the attention output of task's queries for the
// query heads of its KV head into att, from layer l's cache.
func (s *nativeState) attendChunk(l int, t attnTask, qkv, att []float32, sc *attnScratch) {
	cfg := s.d.cfg
	a := attnShapeOf(cfg)
	hd, qd, kvd, qkvd := a.hd, a.qd, a.kvd, a.qkvd
	kc, vc := s.k[l], s.v[l]

	lastPos := t.run.p0 + t.q0 + t.q - 1 // the last query's position
	j0 := 0                              // the first key any query of the chunk sees
	if cfg.SlidingWindow > 0 {
		j0 = max(0, t.run.p0+t.q0-cfg.SlidingWindow+1)
	}
	nk := lastPos + 1 - j0 // keys j0 .. lastPos
	kpad := (nk + blockCols - 1) / blockCols * blockCols
	qpad := (t.q + blockRows - 1) / blockRows * blockRows
	hdp := (hd + blockCols - 1) / blockCols * blockCols

	// Kᵀ in panels of 16 keys ([kpad/16][hd][16]) and V rows padded to
	// hdp columns ([nk][hdp]), zeros beyond.
	sc.kp = grown(sc.kp, kpad*hd)
	sc.v = grown(sc.v, nk*hdp)
	clear(sc.kp[nk/blockCols*blockCols*hd:])
	base := (t.run.slot*s.t+j0)*kvd + t.kh*hd
	for j := range nk {
		k := kc[base+j*kvd : base+j*kvd+hd]
		panel := sc.kp[j/blockCols*blockCols*hd+j%blockCols:]
		for i, x := range k {
			panel[i*blockCols] = x
		}
		row := sc.v[j*hdp : (j+1)*hdp]
		copy(row, vc[base+j*kvd:base+j*kvd+hd])
		clear(row[hd:])
	}
	sc.q = grown(sc.q, qpad*hd)
	sc.s = grown(sc.s, qpad*kpad)
	sc.o = grown(sc.o, qpad*hdp)
	clear(sc.q[t.q*hd:])
	for g := range a.grp {
		h := t.kh*a.grp + g
		for r := range t.q {
			i := t.run.i0 + t.q0 + r
			copy(sc.q[r*hd:(r+1)*hd], qkv[i*qkvd+h*hd:i*qkvd+(h+1)*hd])
		}
		for rb := 0; rb < qpad; rb += blockRows {
			// Keys up to the block's last position, in whole 16-key blocks.
			last := min(t.run.p0+t.q0+rb+blockRows-1, lastPos) - j0
			cEnd := last/blockCols + 1
			for c := range cEnd {
				block4x16(hd, sc.q[rb*hd:], hd, sc.kp[c*blockCols*hd:], blockCols, sc.s[rb*kpad+c*blockCols:], kpad, false)
			}
			for r := rb; r < rb+blockRows; r++ {
				row := sc.s[r*kpad : r*kpad+(last+1)]
				if r >= t.q { // padding: weights zero
					clear(row)
					continue
				}
				pos := t.run.p0 + t.q0 + r
				first := 0
				if cfg.SlidingWindow > 0 {
					first = max(0, pos-cfg.SlidingWindow+1) - j0
				}
				end := pos - j0 + 1
				p := row[first:end]
				for j := range p {
					p[j] *= a.scale
				}
				softmaxRow(p)
				clear(row[:first])
				clear(row[end:])
			}
			// P·V over the keys this block sees.
			for c := 0; c < hdp; c += blockCols {
				block4x16(last+1, sc.s[rb*kpad:], kpad, sc.v[c:], hdp, sc.o[rb*hdp+c:], hdp, false)
			}
		}
		for r := range t.q {
			i := t.run.i0 + t.q0 + r
			copy(att[i*qd+h*hd:i*qd+(h+1)*hd], sc.o[r*hdp:r*hdp+hd])
		}
	}
}

// attendRuns runs the matrix attention of the runs, split between the
// cores when parallel is set.
func (s *nativeState) attendRuns(l int, runs []attnRun, qkv, att []float32, parallel bool) {
	nkv := s.d.cfg.NumKVHeads
	var tasks []attnTask
	work := 0
	for _, r := range runs {
		for kh := range nkv {
			for q0 := 0; q0 < r.n; q0 += attnChunk {
				q := min(attnChunk, r.n-q0)
				tasks = append(tasks, attnTask{run: r, kh: kh, q0: q0, q: q})
				work += q * (r.p0 + q0 + q) * s.d.cfg.NumHeads / nkv * s.d.cfg.HeadDim
			}
		}
	}
	parallelRows(parallel, len(tasks), work, func(lo, hi int) {
		var sc attnScratch
		for _, t := range tasks[lo:hi] {
			s.attendChunk(l, t, qkv, att, &sc)
		}
	})
}
