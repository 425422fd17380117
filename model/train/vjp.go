package train

import (
	"reflect"
	"slices"
	"sync"

	. "github.com/gomlx/gomlx/pkg/core/graph" //nolint:revive,staticcheck // the GoMLX convention for graph code
	"github.com/gomlx/gomlx/pkg/core/shapes"
)

var installVJP sync.Once

// installDotGeneralVJP replaces GoMLX's gradient of DotGeneral (v0.26
// builds it as a broadcast product and a sum, materialising
// [rows, out, in] for every linear layer: seconds per step on the pure Go
// backend) with the same gradients written as two DotGenerals. The
// original stays the fallback for products without free axes on both
// sides. It changes a process-wide registry, once; the values are the same.
func installDotGeneralVJP() {
	installVJP.Do(func() {
		orig := VJPRegistration[NodeTypeDotGeneral]
		VJPRegistration[NodeTypeDotGeneral] = func(node *Node, v []*Node, out shapes.Shape) []*Node {
			if r := fastDotGeneralVJP(node, v[0]); r != nil {
				return r
			}
			return orig(node, v, out)
		}
	})
}

// dotAxes reads a DotGeneral node's axes (the graph package keeps them in
// an unexported struct; reflect reads them without changing anything).
func dotAxes(node *Node) (lc, lb, rc, rb []int, ok bool) {
	f := reflect.ValueOf(node).Elem().FieldByName("inputs")
	if !f.IsValid() || f.IsNil() {
		return nil, nil, nil, nil, false
	}
	s := f.Elem()
	if s.Kind() == reflect.Pointer {
		s = s.Elem()
	}
	get := func(name string) ([]int, bool) {
		x := s.FieldByName(name)
		if !x.IsValid() || x.Kind() != reflect.Slice {
			return nil, false
		}
		out := make([]int, x.Len())
		for i := range out {
			out[i] = int(x.Index(i).Int())
		}
		return out, true
	}
	var ok1, ok2, ok3, ok4 bool
	lc, ok1 = get("lhsContractingAxes")
	lb, ok2 = get("lhsBatchAxes")
	rc, ok3 = get("rhsContractingAxes")
	rb, ok4 = get("rhsBatchAxes")
	return lc, lb, rc, rb, ok1 && ok2 && ok3 && ok4
}

func crossAxes(rank int, used ...[]int) []int {
	var out []int
	for a := range rank {
		if !slices.ContainsFunc(used, func(u []int) bool { return slices.Contains(u, a) }) {
			out = append(out, a)
		}
	}
	return out
}

func iota(from, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = from + i
	}
	return out
}

// rankIn is the position of a within the sorted copy of axes.
func rankIn(axes []int, a int) int {
	s := slices.Sorted(slices.Values(axes))
	return slices.Index(s, a)
}

// fastDotGeneralVJP returns the gradients of y = DotGeneral(lhs, rhs) given
// v = dL/dy (laid out [batch..., lhsCross..., rhsCross...]), or nil.
func fastDotGeneralVJP(node, v *Node) []*Node {
	in := node.Inputs()
	if len(in) != 2 {
		return nil
	}
	lhs, rhs := in[0], in[1]
	lc, lb, rc, rb, ok := dotAxes(node)
	if !ok {
		return nil
	}
	lx := crossAxes(lhs.Rank(), lc, lb)
	rx := crossAxes(rhs.Rank(), rc, rb)
	if len(lx) == 0 || len(rx) == 0 || len(lc) == 0 {
		return nil
	}
	nb := len(lb)
	vb := iota(0, nb)
	// dL/dlhs: contract v's rhs-cross axes with rhs's cross axes → [batch, lhsCross, rhs's contracting axes (sorted)].
	gl := DotGeneral(v, iota(nb+len(lx), len(rx)), vb, rhs, rx, rb)
	perm := make([]int, lhs.Rank())
	for i, a := range lb {
		perm[a] = i
	}
	for j, a := range lx {
		perm[a] = nb + j
	}
	for k, a := range lc {
		perm[a] = nb + len(lx) + rankIn(rc, rc[k])
	}
	gl = TransposeAllAxes(gl, perm...)
	// dL/drhs: contract v's lhs-cross axes with lhs's cross axes → [batch, rhsCross, lhs's contracting axes (sorted)].
	gr := DotGeneral(v, iota(nb, len(lx)), vb, lhs, lx, lb)
	perm = make([]int, rhs.Rank())
	for i, a := range rb {
		perm[a] = i
	}
	for j, a := range rx {
		perm[a] = nb + j
	}
	for k, a := range rc {
		perm[a] = nb + len(rx) + rankIn(lc, lc[k])
	}
	gr = TransposeAllAxes(gr, perm...)
	return []*Node{gl, gr}
}
