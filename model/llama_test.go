package model

import (
	"errors"
	"math"
	"sort"
	"strings"
	"testing"

	"github.com/gomlx/gomlx/backends"
	"github.com/gomlx/gomlx/pkg/core/dtypes"
	. "github.com/gomlx/gomlx/pkg/core/graph" //nolint:revive,staticcheck // the GoMLX convention for graph code
	"github.com/gomlx/gomlx/pkg/core/tensors"

	"github.com/largeforge/largeforge/model/checkpoint"
)

// TestForwardGradient builds the trainer's view of the decoder (Forward
// over parameters named as in the checkpoint), takes the gradient of the
// mean next-token loss and checks one entry against a finite difference.
func TestForwardGradient(t *testing.T) {
	ck := tinyCheckpoint(t)
	cfg := ck.Config
	cfg.MaxPositionEmbeddings = 16
	be, _, err := newBackend("")
	if err != nil {
		t.Fatal(err)
	}
	defer be.Finalize()
	names := make([]string, 0, len(ck.Tensors))
	for n := range ck.Tensors {
		names = append(names, n)
	}
	sort.Strings(names)
	cos, sin := RopeTables(cfg, 16)
	values := map[string]*tensors.Tensor{
		"rope.cos": tensors.FromFlatDataAndDimensions(cos, 16, cfg.HeadDim/2),
		"rope.sin": tensors.FromFlatDataAndDimensions(sin, 16, cfg.HeadDim/2),
	}
	for _, n := range names {
		values[n] = tensors.FromFlatDataAndDimensions(ck.Tensors[n].Data, ck.Tensors[n].Shape...)
	}
	names = append(names, "rope.cos", "rope.sin")
	const target = "model.layers.1.self_attn.k_proj.weight"
	toks := []int32{256, 72, 101, 108, 108, 111, 32, 119}
	next := []int32{72, 101, 108, 108, 111, 32, 119, 0}

	lossAndGrad := func(be backends.Backend, vals map[string]*tensors.Tensor) (float64, []float32) {
		t.Helper()
		g := NewGraph(be, "grad")
		defer g.Finalize()
		nodes := map[string]*Node{}
		for _, n := range names {
			nodes[n] = Parameter(g, n, vals[n].Shape())
		}
		tk := param(g, "tokens", dtypes.Int32, 1, len(toks))
		nx := param(g, "next", dtypes.Int32, 1, len(toks))
		weights, err := BindNodes(cfg, nodes, nodes["rope.cos"], nodes["rope.sin"])
		if err != nil {
			t.Fatal(err)
		}
		lp := tokenLogprobs(Forward(cfg, weights, tk), nx)
		// The last position has no next token: weight it 0.
		w := make([]float32, len(toks))
		for i := range len(toks) - 1 {
			w[i] = 1 / float32(len(toks)-1)
		}
		loss := Neg(ReduceAllSum(Mul(lp, Const(g, [][]float32{w}))))
		// Every weight's gradient must build on this backend (the trainer
		// needs them all); the target's is returned, the others summed.
		wrt := make([]*Node, 0, len(names))
		ti := 0
		for _, n := range names[:len(names)-2] {
			if n == target {
				ti = len(wrt)
			}
			wrt = append(wrt, nodes[n])
		}
		grads := Gradient(loss, wrt...)
		total := ScalarZero(g, dtypes.Float32)
		for _, gr := range grads {
			total = Add(total, ReduceAllSum(Square(gr)))
		}
		g.Compile(loss, grads[ti], total)
		args := make([]any, 0, len(names)+2)
		for _, n := range names {
			args = append(args, vals[n])
		}
		args = append(args, tensors.FromFlatDataAndDimensions(toks, 1, len(toks)), tensors.FromFlatDataAndDimensions(next, 1, len(toks)))
		out := g.Run(args...)
		l, err := tensors.CopyFlatData[float32](out[0])
		if err != nil {
			t.Fatal(err)
		}
		gr, err := tensors.CopyFlatData[float32](out[1])
		if err != nil {
			t.Fatal(err)
		}
		if tot, _ := tensors.CopyFlatData[float32](out[2]); math.IsNaN(float64(tot[0])) || math.IsInf(float64(tot[0]), 0) || tot[0] == 0 {
			t.Errorf("sum of squared gradients %g", tot[0])
		}
		return float64(l[0]), gr
	}
	loss, grad := lossAndGrad(be, values)
	if math.IsNaN(loss) || loss <= 0 {
		t.Fatalf("loss %g", loss)
	}
	// Finite difference on the largest gradient entry.
	idx := 0
	for i, gv := range grad {
		if math.Abs(float64(gv)) > math.Abs(float64(grad[idx])) {
			idx = i
		}
	}
	const h = 1e-2
	shifted := func(delta float32) float64 {
		data := append([]float32{}, ck.Tensors[target].Data...)
		data[idx] += delta
		vals := map[string]*tensors.Tensor{}
		for k, v := range values {
			vals[k] = v
		}
		vals[target] = tensors.FromFlatDataAndDimensions(data, ck.Tensors[target].Shape...)
		l, _ := lossAndGrad(be, vals)
		return l
	}
	fd := (shifted(h) - shifted(-h)) / (2 * h)
	if got := float64(grad[idx]); math.Abs(got-fd) > 1e-2*math.Abs(fd)+1e-4 {
		t.Errorf("d loss / d %s[%d]: gradient %g, finite difference %g", target, idx, got, fd)
	}
}

// TestBindNodes binds the decoder to graph nodes by checkpoint name: a tied
// head is the embedding, and a missing node or one of another shape is
// refused naming the tensor.
func TestBindNodes(t *testing.T) {
	be, _, err := newBackend("")
	if err != nil {
		t.Fatal(err)
	}
	defer be.Finalize()
	tied := tinyCheckpoint(t).Config
	tied.TieWordEmbeddings = true
	tests := []struct {
		name    string
		cfg     checkpoint.Config
		mutate  func(g *Graph, nodes map[string]*Node)
		wantErr error
		tensor  string
	}{
		{name: "untied", cfg: tinyCheckpoint(t).Config},
		{name: "tied head", cfg: tied},
		{
			name: "missing", cfg: tied, wantErr: checkpoint.ErrMissingTensor, tensor: "model.layers.1.self_attn.o_proj.weight",
			mutate: func(_ *Graph, nodes map[string]*Node) { delete(nodes, "model.layers.1.self_attn.o_proj.weight") },
		},
		{
			name: "wrong shape", cfg: tied, wantErr: checkpoint.ErrShape, tensor: "model.layers.0.mlp.gate_proj.weight",
			mutate: func(g *Graph, nodes map[string]*Node) {
				nodes["model.layers.0.mlp.gate_proj.weight"] = param(g, "odd", dtypes.Float32, 3, 3)
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewGraph(be, "bind")
			defer g.Finalize()
			nodes := map[string]*Node{}
			for _, w := range checkpoint.Layout(tt.cfg) {
				nodes[w.Name] = param(g, w.Name, dtypes.Float32, w.Shape...)
			}
			if tt.mutate != nil {
				tt.mutate(g, nodes)
			}
			w, err := BindNodes(tt.cfg, nodes, nil, nil)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || !errors.Is(err, ErrWeights) || !strings.Contains(err.Error(), tt.tensor) {
					t.Fatalf("err %v, want %v and ErrWeights naming %s", err, tt.wantErr, tt.tensor)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if w.Embed != nodes["model.embed_tokens.weight"] || w.Layers[1].Down != nodes["model.layers.1.mlp.down_proj.weight"] {
				t.Error("weights not bound to their nodes")
			}
			if tt.cfg.TieWordEmbeddings != (w.LMHead == w.Embed) {
				t.Errorf("head tied %v, config ties %v", w.LMHead == w.Embed, tt.cfg.TieWordEmbeddings)
			}
		})
	}
}
