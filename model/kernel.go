package model

import (
	"runtime"
	"time"
)

// The hand-written float32 kernels of the native decoder (native.go). A
// weight [out, in] is packed once, transposed into panels of 16 columns
// (zero padded), and products are computed in blocks of 4 rows by 16
// columns: by an AVX2/FMA assembly kernel on amd64 CPUs that have it,
// by block4x16Go elsewhere.

const (
	blockRows = 4
	blockCols = 16
	// parallelMACs is the product size (multiply-adds) above which a
	// product is split between the cores.
	parallelMACs = 1 << 15
	// kBlock is the most rows of a weight panel (kBlock x 16 values, 24 KiB)
	// that stay in the L1 cache while the kernel passes over the row blocks;
	// a product's inner dimension is cut into equal blocks of at most that.
	kBlock = 384
	// chunkBlocks row blocks (64 rows x kBlock values, 64 KiB) stay in the
	// L2 cache while the kernel passes over the column blocks.
	chunkBlocks = 16
)

// packedMatrix is a weight [out, in] held transposed for the kernels, in
// panels: the 16 columns of each column block lie together, [in, 16], one
// panel after the other, so the kernel reads a panel as one contiguous run
// (a row-major [in, out] layout would touch a new page every row).
type packedMatrix struct {
	in, out, ld int          // ld: out rounded up to blockCols
	wt          []float32    // [ld/16][in][16]
	q           *quantMatrix // when set, the weight is quantized (quant.go): wt is nil and products run on q
}

// packMatrix transposes w [out, in] (row-major) into a packedMatrix.
func packMatrix(w []float32, out, in int) *packedMatrix {
	ld := (out + blockCols - 1) / blockCols * blockCols
	wt := make([]float32, in*ld)
	for o := range out {
		panel := wt[(o/blockCols)*in*blockCols:]
		row := w[o*in : (o+1)*in]
		for i, v := range row {
			panel[i*blockCols+o%blockCols] = v
		}
	}
	return &packedMatrix{in: in, out: out, ld: ld, wt: wt}
}

// panel returns column block c's panel from weight row k0 on.
func (p *packedMatrix) panel(c, k0 int) []float32 {
	return p.wt[(c*p.in+k0)*blockCols:]
}

// mul sets y [rows, out] = x [rows, in] · wᵀ, plus bias [out] when not nil,
// on every core when the product is large enough.
func (p *packedMatrix) mul(y, x []float32, rows int, bias []float32) {
	p.mulOn(y, x, rows, bias, true)
}

// mulOn is mul, on the calling goroutine alone unless parallel is set.
func (p *packedMatrix) mulOn(y, x []float32, rows int, bias []float32, parallel bool) {
	if p.q != nil {
		p.q.mulOn(y, x, rows, bias, parallel)
		return
	}
	p.mulStrided(y, p.out, x, p.in, rows, false, parallel)
	if bias != nil {
		for r := range rows {
			row := y[r*p.out : (r+1)*p.out]
			for o, b := range bias {
				row[o] += b
			}
		}
	}
}

// mulStrided sets y [rows, out] (row stride ldy) = x [rows, in] (row
// stride ldx) · wᵀ, added to y's values when add is set; on every core
// when parallel is set and the product is large enough.
func (p *packedMatrix) mulStrided(y []float32, ldy int, x []float32, ldx int, rows int, add, parallel bool) {
	colBlocks := p.ld / blockCols
	rowBlocks := (rows + blockRows - 1) / blockRows
	workers := 1
	if parallel && rows*p.in*p.out >= parallelMACs {
		workers = min(runtime.GOMAXPROCS(0), max(colBlocks, rowBlocks))
	}
	if workers <= 1 {
		p.mulBlocks(y, ldy, x, ldx, rows, 0, colBlocks, 0, rowBlocks, add)
		return
	}
	forwardTeam.run(workers, func(w int) {
		c0, c1, r0, r1 := 0, colBlocks, 0, rowBlocks
		if colBlocks >= workers {
			c0, c1 = colBlocks*w/workers, colBlocks*(w+1)/workers
		} else {
			r0, r1 = rowBlocks*w/workers, rowBlocks*(w+1)/workers
		}
		p.mulBlocks(y, ldy, x, ldx, rows, c0, c1, r0, r1, add)
	})
}

// mulBlocks computes the column blocks [c0, c1) of the row blocks [r0, r1)
// (added to y's values when add is set). Full blocks run in chunks that
// stay in the caches (kBlock rows of the weight, chunkBlocks row blocks of
// x); edge blocks (fewer than 4 rows or 16 columns) go whole through
// scratch space.
func (p *packedMatrix) mulBlocks(y []float32, ldy int, x []float32, ldx int, rows, c0, c1, r0, r1 int, add bool) {
	in, out := p.in, p.out
	var (
		xs []float32 // the last, partial row block, zero padded
		ys [blockRows * blockCols]float32
	)
	fullRows := rows / blockRows
	if fullRows < r1 {
		xs = make([]float32, blockRows*in)
		for r := fullRows * blockRows; r < rows; r++ {
			copy(xs[(r-fullRows*blockRows)*in:], x[r*ldx:r*ldx+in])
		}
	}
	fullCols := out / blockCols
	rEnd := min(r1, fullRows)
	kb := in
	if in > kBlock {
		nk := (in + kBlock - 1) / kBlock
		kb = (in + nk - 1) / nk
	}
	for k0 := 0; k0 < in; k0 += kb {
		k := min(kb, in-k0)
		for rc := r0; rc < rEnd; rc += chunkBlocks {
			for c := c0; c < min(c1, fullCols); c++ {
				col := c * blockCols
				w := p.panel(c, k0)
				for rb := rc; rb < min(rc+chunkBlocks, rEnd); rb++ {
					row := rb * blockRows
					block4x16(k, x[row*ldx+k0:], ldx, w, blockCols, y[row*ldy+col:], ldy, add || k0 > 0)
				}
			}
		}
	}
	for c := c0; c < c1; c++ {
		col := c * blockCols
		for rb := r0; rb < r1; rb++ {
			if c < fullCols && rb < fullRows {
				continue
			}
			row := rb * blockRows
			xb, ldb := x[row*ldx:], ldx
			if rb >= fullRows {
				xb, ldb = xs, in
			}
			n, m := min(blockRows, rows-row), min(blockCols, out-col)
			if add {
				ys = [blockRows * blockCols]float32{}
				for r := range n {
					copy(ys[r*blockCols:r*blockCols+m], y[(row+r)*ldy+col:(row+r)*ldy+col+m])
				}
			}
			block4x16(in, xb, ldb, p.panel(c, 0), blockCols, ys[:], blockCols, add)
			for r := range n {
				copy(y[(row+r)*ldy+col:(row+r)*ldy+col+m], ys[r*blockCols:r*blockCols+m])
			}
		}
	}
}

// block4x16Go is the portable form of the micro-kernel.
func block4x16Go(k int, x []float32, ldx int, w []float32, ldw int, y []float32, ldy int, add bool) {
	var acc [blockRows][blockCols]float32
	if add {
		for r := range blockRows {
			copy(acc[r][:], y[r*ldy:r*ldy+blockCols])
		}
	}
	for i := range k {
		wr := w[i*ldw : i*ldw+blockCols]
		for r := range blockRows {
			xv := x[r*ldx+i]
			a := &acc[r]
			for j, wv := range wr {
				a[j] += xv * wv
			}
		}
	}
	for r := range blockRows {
		copy(y[r*ldy:r*ldy+blockCols], acc[r][:])
	}
}

// KernelGFLOPs measures the kernels' float32 rate, in GFLOP/s, on reps
// products of two n×n matrices on every core (GOMAXPROCS), after one
// product to warm up: the rate benchmarks set their figures beside.
func KernelGFLOPs(n, reps int) float64 {
	x := make([]float32, n*n)
	for i := range x {
		x[i] = float32(i%7) * 0.01
	}
	p := packMatrix(x, n, n)
	y := make([]float32, n*n)
	p.mul(y, x, n, nil)
	start := time.Now()
	for range reps {
		p.mul(y, x, n, nil)
	}
	return 2 * float64(n*n*n*reps) / time.Since(start).Seconds() / 1e9
}

// logSumExpPartsGo is the portable logSumExpParts: max(x) and
// Σ e^(x[i] - max(x)), x unchanged.
func logSumExpPartsGo(x []float32) (best float32, sum float64) {
	best = x[0]
	for _, v := range x {
		best = max(best, v)
	}
	var buf [256]float32
	for lo := 0; lo < len(x); lo += len(buf) {
		part := buf[:min(len(buf), len(x)-lo)]
		for j := range part {
			part[j] = x[lo+j] - best
		}
		expRow(part, part)
		for _, p := range part {
			sum += float64(p)
		}
	}
	return best, sum
}

// siluMulGo is the portable siluMul: a[i] = g[i] / (1 + e^-g[i]) · u[i].
func siluMulGo(a, g, u []float32) {
	for j, gv := range g[:len(a)] {
		a[j] = -gv
	}
	expRow(a, a)
	for j, gv := range g[:len(a)] {
		a[j] = gv / (1 + a[j]) * u[j]
	}
}
