package model

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
			for j0 := 0; j0 < k; j0 += tile {
				for i := i0; i < min(i0+tile, m); i++ {
					row := a[i*lda:]
					for j := j0; j < min(j0+tile, k); j++ {
						t[j*m+i] = row[j]
					}
				}
			}
		}
	})
	return t
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

// mulTN sets c [m, n] (row stride ldc) = aᵀ · b for a [k, m] (stride lda)
// and b [k, n] (stride ldb), added to c's values when add is set: the
// weight gradient dW += dYᵀ·X of a layer y = x·Wᵀ.
func (pb *packBuf) mulTN(c []float32, ldc int, a []float32, lda int, b []float32, ldb int, m, k, n int, add, parallel bool) {
	at := pb.transpose(a, lda, k, m, parallel)
	pb.pack(b, ldb, k, n, false, parallel).mulStrided(c, ldc, at, k, m, add, parallel)
}

// grow returns s resized to n values, reallocated when too small; the
// values are not cleared.
func grow(s []float32, n int) []float32 {
	if cap(s) < n {
		return make([]float32, n)
	}
	return s[:n]
}
