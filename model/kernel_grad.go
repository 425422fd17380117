package model

import "sync"

// The products of the native training engine's backward pass, on the
// micro-kernel of kernel.go. The kernel multiplies 4 rows of a row-major
// left operand by a panel of 16 columns of the right one; any right
// operand is first packed into panels (a copy of its values, cheap beside
// the product), and a transposed left operand is transposed into scratch
// space first.

// packBuf packs right operands into panels, reusing its storage.
type packBuf struct {
	p   packedMatrix
	tr  []float32 // a transposed left operand
	tmp []float32 // scratch space of its user
}

// pack packs the right operand b of a product [·, k] · [k, n]: b is [k, n]
// with row stride ldb, or when trans b is [n, k] with row stride ldb and
// the operand is bᵀ; the panels are split between the cores when parallel
// is set and b is large. The result is valid until the next pack.
func (pb *packBuf) pack(b []float32, ldb, k, n int, trans, parallel bool) *packedMatrix {
	ld := (n + blockCols - 1) / blockCols * blockCols
	pb.p = packedMatrix{in: k, out: n, ld: ld, wt: grow(pb.p.wt, k*ld)}
	wt := pb.p.wt
	if n%blockCols != 0 { // the last panel's padding columns
		last := wt[(ld/blockCols-1)*k*blockCols : ld/blockCols*k*blockCols]
		clear(last)
	}
	parallelRows(parallel, ld/blockCols, k*n, func(c0, c1 int) {
		for c := c0; c < c1; c++ {
			panel := wt[c*k*blockCols : (c+1)*k*blockCols]
			col := c * blockCols
			m := min(blockCols, n-col)
			if trans {
				for j := range m {
					row := b[(col+j)*ldb : (col+j)*ldb+k]
					for i, v := range row {
						panel[i*blockCols+j] = v
					}
				}
				continue
			}
			for i := range k {
				copy(panel[i*blockCols:i*blockCols+m], b[i*ldb+col:i*ldb+col+m])
			}
		}
	})
	return &pb.p
}

// transpose returns aᵀ [k, m] of a [m, k] (row stride lda), in pb's
// scratch space (valid until the next transpose); in tiles of 32x32 split
// between the cores when parallel is set and a is large.
func (pb *packBuf) transpose(a []float32, lda, m, k int, parallel bool) []float32 {
	pb.tr = grow(pb.tr, m*k)
	t := pb.tr
	const tile = 32
	parallelRows(parallel, (m+tile-1)/tile, m*k, func(b0, b1 int) {
		for i0 := b0 * tile; i0 < min(b1*tile, m); i0 += tile {
			iEnd := min(i0+tile, m)
			for j0 := 0; j0 < k; j0 += tile {
				transposeTile(t, a, lda, m, i0, iEnd, j0, min(j0+tile, k))
			}
		}
	})
	return t
}

// transposeTile sets t[j*m+i] = a[i*lda+j] for i in [i0, i1), j in [j0,
// j1): four rows of a at a time, each column's four values written
// together.
func transposeTile(t, a []float32, lda, m, i0, i1, j0, j1 int) {
	i := i0
	for ; i+4 <= i1; i += 4 {
		n := j1 - j0
		r0 := a[i*lda+j0 : i*lda+j0+n]
		r1 := a[(i+1)*lda+j0 : (i+1)*lda+j0+n]
		r2 := a[(i+2)*lda+j0 : (i+2)*lda+j0+n]
		r3 := a[(i+3)*lda+j0 : (i+3)*lda+j0+n]
		for j, v := range r0 {
			o := t[(j0+j)*m+i : (j0+j)*m+i+4]
			o[0], o[1], o[2], o[3] = v, r1[j], r2[j], r3[j]
		}
	}
	for ; i < i1; i++ {
		for j, v := range a[i*lda+j0 : i*lda+j1] {
			t[(j0+j)*m+i] = v
		}
	}
}

// mulNN sets c [m, n] (row stride ldc) = a [m, k] (stride lda) · b [k, n]
// (stride ldb), added to c's values when add is set.
func (pb *packBuf) mulNN(c []float32, ldc int, a []float32, lda int, b []float32, ldb int, m, k, n int, add, parallel bool) {
	pb.pack(b, ldb, k, n, false, parallel).mulStrided(c, ldc, a, lda, m, add, parallel)
}

// mulNT sets c [m, n] (row stride ldc) = a [m, k] (stride lda) · bᵀ for b
// [n, k] (stride ldb), added to c's values when add is set.
func (pb *packBuf) mulNT(c []float32, ldc int, a []float32, lda int, b []float32, ldb int, m, k, n int, add, parallel bool) {
	pb.pack(b, ldb, k, n, true, parallel).mulStrided(c, ldc, a, lda, m, add, parallel)
}

// tnChunk is the most columns of a transposed left operand that one
// goroutine transposes and multiplies at once: the chunk (tnChunk x k
// values, 512 KiB for a micro-batch of 1024 tokens) stays in the L2 cache
// between the two, and its transpose writes to nearby rows.
const tnChunk = 128

// mulTN sets c [m, n] (row stride ldc) = aᵀ · b for a [k, m] (stride lda)
// and b [k, n] (stride ldb), added to c's values when add is set: the
// weight gradient dW += dYᵀ·X of a layer y = x·Wᵀ. A large parallel
// product runs in chunks of tnChunk rows of c, each transposed and
// multiplied by one goroutine against b packed once.
func (pb *packBuf) mulTN(c []float32, ldc int, a []float32, lda int, b []float32, ldb int, m, k, n int, add, parallel bool) {
	if !parallel || m <= tnChunk || m*k*n < parallelMACs {
		at := pb.transpose(a, lda, k, m, parallel)
		pb.pack(b, ldb, k, n, false, parallel).mulStrided(c, ldc, at, k, m, add, parallel)
		return
	}
	p := pb.pack(b, ldb, k, n, false, true)
	parallelRows(true, (m+tnChunk-1)/tnChunk, m*k*n, func(lo, hi int) {
		tb, _ := chunkBufs.Get().(*packBuf)
		if tb == nil {
			tb = &packBuf{}
		}
		defer chunkBufs.Put(tb)
		for ch := lo; ch < hi; ch++ {
			c0, c1 := ch*tnChunk, min((ch+1)*tnChunk, m)
			at := tb.transpose(a[c0:], lda, k, c1-c0, false)
			p.mulStrided(c[c0*ldc:], ldc, at, k, c1-c0, add, false)
		}
	})
}

// chunkBufs holds mulTN's per-goroutine transpose space between calls.
var chunkBufs sync.Pool

// grow returns s resized to n values, reallocated when too small; the
// values are not cleared.
func grow(s []float32, n int) []float32 {
	if cap(s) < n {
		return make([]float32, n)
	}
	return s[:n]
}
