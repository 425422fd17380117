package train

import (
	"errors"
	"math"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/gomlx/gomlx/pkg/core/tensors"
)

// The optimizer step of the native engine: optimizerNodes' update (optim.go,
// the graph the golden tests hold to the published formulas) computed on
// the trainer's own float32 storage, in place, on every core. Each rule is
// the same sequence of float32 operations as its graph: adamwTorch,
// adamwHF, sgd and adafactor below mirror the functions of the same name
// in optim.go, line for line (TestNativeOptimizerMatchesGraph).

// hostChunk is the most values of a tensor one worker updates at once; the
// gradient norm sums its chunks in this fixed order, so the step does not
// depend on the number of cores.
const hostChunk = 1 << 15

// hostValues returns the float32 storage of each of ts, in place. With
// mutable, a copy of a tensor on the backend is dropped (the caller will
// change the values; the next graph takes them anew). The slices are valid
// until the tensors are next handed to a graph.
func hostValues(ts []*tensors.Tensor, mutable bool) ([][]float32, error) {
	out := make([][]float32, len(ts))
	for i, x := range ts {
		take := func(f []float32) { out[i] = f }
		var err error
		if mutable {
			err = tensors.MutableFlatData(x, take)
		} else {
			err = tensors.ConstFlatData(x, take)
		}
		if err != nil {
			return nil, errors.Join(ErrBackend, err)
		}
	}
	return out, nil
}

// hostScalars are the per-step values of an update: the scale of the
// summed gradients (1/weight sum), the clipping coefficient, the rate and
// stepScalars' two values.
type hostScalars struct {
	inv, coef, lr, s1, s2 float32
}

// applyHost takes one optimizer step in place on params, the states ms and
// vs and the window's summed gradients acc over wSum weighted targets (all
// in t.names order) at rate lr: the gradients divided by the weight sum,
// clipped to max_grad_norm, fed to the rule. It returns the gradient norm
// before clipping and counts the step.
func (t *Trainer) applyHost(params, ms, vs, acc [][]float32, wSum, lr float64) float64 {
	type item struct{ i, lo, hi int }
	var items []item
	for i, a := range acc {
		for lo := 0; lo < len(a); lo += hostChunk {
			items = append(items, item{i, lo, min(lo+hostChunk, len(a))})
		}
	}
	inv := 1 / max(float32(wSum), 1)
	sums := make([]float64, len(items))
	eachItem(len(items), func(k int) {
		it := items[k]
		var s float64
		for _, a := range acc[it.i][it.lo:it.hi] {
			g := a * inv
			s += float64(g * g)
		}
		sums[k] = s
	})
	var sq float64
	for _, s := range sums {
		sq += s
	}
	norm := float32(math.Sqrt(sq))
	sc := hostScalars{inv: inv, coef: 1, lr: float32(lr)}
	if t.cfg.MaxGradNorm > 0 {
		sc.coef = min(1, float32(t.cfg.MaxGradNorm)/(norm+1e-6))
	}
	sc.s1, sc.s2 = t.optim.stepScalars(float64(t.step + 1))
	wd := func(i int) float32 {
		if t.decay[i] {
			return float32(t.cfg.WeightDecay)
		}
		return 0
	}
	if t.optim.name == "adafactor" { // a tensor's update needs all its values
		eachItem(len(params), func(i int) {
			adafactorHost(params[i], ms[i], vs[i], acc[i], t.params[i].Shape().Dimensions, sc, wd(i))
		})
	} else {
		eachItem(len(items), func(k int) {
			it := items[k]
			p, g := params[it.i][it.lo:it.hi], acc[it.i][it.lo:it.hi]
			m, v := ms[it.i], vs[it.i]
			switch t.optim.name {
			case "adamw_hf":
				adamwHFHost(p, m[it.lo:it.hi], v[it.lo:it.hi], g, sc, wd(it.i))
			case "sgd":
				t.optim.sgdHost(p, m[it.lo:it.hi], g, sc, wd(it.i))
			default:
				adamwTorchHost(p, m[it.lo:it.hi], v[it.lo:it.hi], g, sc, wd(it.i))
			}
		})
	}
	t.step++
	return float64(norm)
}

// eachItem runs f(0..n-1) on GOMAXPROCS goroutines.
func eachItem(n int, f func(k int)) {
	workers := min(runtime.GOMAXPROCS(0), n)
	var next atomic.Int64
	work := func() {
		for k := int(next.Add(1) - 1); k < n; k = int(next.Add(1) - 1) {
			f(k)
		}
	}
	var wg sync.WaitGroup
	for range workers - 1 {
		wg.Go(work)
	}
	work()
	wg.Wait()
}

func sqrt32(x float32) float32 { return float32(math.Sqrt(float64(x))) }

// adamwTorchHost is adamwTorch.
func adamwTorchHost(p, m, v, acc []float32, sc hostScalars, wd float32) {
	const b1, b2, c1, c2, eps = float32(Beta1), float32(Beta2), float32(1 - Beta1), float32(1 - Beta2), float32(Epsilon)
	for j, a := range acc {
		g := a * sc.inv * sc.coef
		mj := m[j]*b1 + g*c1
		vj := v[j]*b2 + (g*g)*c2
		upd := (mj / sc.s1) / (sqrt32(vj/sc.s2) + eps)
		pj := p[j]
		if wd > 0 {
			pj -= sc.lr * (pj * wd)
		}
		p[j], m[j], v[j] = pj-sc.lr*upd, mj, vj
	}
}

// adamwHFHost is adamwHF.
func adamwHFHost(p, m, v, acc []float32, sc hostScalars, wd float32) {
	const b1, b2, c1, c2, eps = float32(Beta1), float32(Beta2), float32(1 - Beta1), float32(1 - Beta2), float32(Epsilon)
	stepSize := sc.lr * sqrt32(sc.s2) / sc.s1
	for j, a := range acc {
		g := a * sc.inv * sc.coef
		mj := m[j]*b1 + g*c1
		vj := v[j]*b2 + (g*g)*c2
		pj := p[j] - stepSize*(mj/(sqrt32(vj)+eps))
		if wd > 0 {
			pj -= sc.lr * (pj * wd)
		}
		p[j], m[j], v[j] = pj, mj, vj
	}
}

// sgdHost is sgd: buf is the momentum buffer (s1 the new gradient's weight).
func (o optimizer) sgdHost(p, buf, acc []float32, sc hostScalars, wd float32) {
	mom := float32(o.momentum)
	for j, a := range acc {
		d := a * sc.inv * sc.coef
		if wd > 0 {
			d += p[j] * wd
		}
		if mom > 0 {
			buf[j] = buf[j]*mom + d*sc.s1
			if o.nesterov {
				d += buf[j] * mom
			} else {
				d = buf[j]
			}
		}
		p[j] -= sc.lr * d
	}
}

// adafactorHost is adafactor: row and col are a matrix's factored second
// moment (a vector's whole second moment in col); s1 is the step's β2.
func adafactorHost(p, row, col, acc []float32, dims []int, sc hostScalars, wd float32) {
	const eps1, clip = float32(AdafactorEps1), float32(AdafactorClipThreshold)
	beta2t, keep := sc.s1, 1-sc.s1
	grad := func(j int) float32 { return acc[j] * sc.inv * sc.coef }
	var u func(j int) float32
	if len(dims) == 2 {
		rows, cols := dims[0], dims[1]
		colSum := make([]float64, cols)
		for a := range rows {
			var rs float64
			for b := range cols {
				g := grad(a*cols + b)
				sq := g*g + eps1
				rs += float64(sq)
				colSum[b] += float64(sq)
			}
			row[a] = row[a]*beta2t + float32(rs/float64(cols))*keep
		}
		var rowSum float64
		for a := range rows {
			rowSum += float64(row[a])
		}
		rowMean := float32(rowSum / float64(rows))
		rInv, cInv := make([]float32, rows), make([]float32, cols)
		for b := range cols {
			col[b] = col[b]*beta2t + float32(colSum[b]/float64(rows))*keep
			cInv[b] = 1 / sqrt32(col[b])
		}
		for a := range rows {
			rInv[a] = 1 / sqrt32(row[a]/rowMean)
		}
		u = func(j int) float32 { return rInv[j/cols] * cInv[j%cols] * grad(j) }
	} else {
		for j := range col {
			g := grad(j)
			col[j] = col[j]*beta2t + (g*g+eps1)*keep
		}
		u = func(j int) float32 { return 1 / sqrt32(col[j]) * grad(j) }
	}
	var ss float64
	for j := range p {
		x := u(j)
		ss += float64(x * x)
	}
	rms := float32(math.Sqrt(ss / float64(len(p))))
	div := max(rms/clip, 1)
	for j := range p {
		x := u(j) / div * sc.lr
		pj := p[j]
		if wd > 0 {
			pj -= sc.lr * (pj * wd)
		}
		p[j] = pj - x
	}
}
