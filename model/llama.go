package model

import (
	"fmt"
	"math"
	"slices"

	"github.com/gomlx/gomlx/pkg/core/dtypes"
	. "github.com/gomlx/gomlx/pkg/core/graph" //nolint:revive,staticcheck // the GoMLX convention for graph code
	"github.com/gomlx/gomlx/pkg/core/shapes"

	"github.com/largeforge/largeforge/model/checkpoint"
)

// Weights are the graph nodes of a Llama-family decoder's parameters: the
// one decoder definition (checkpoint.Decoder, in the Hugging Face layout,
// projections [out, in]) bound to nodes, and the rotary tables. The trainer
// binds its own parameters (BindNodes) and calls Forward, so inference and
// training share one implementation.
type Weights struct {
	checkpoint.Decoder[*Node]
	// Fused, when set, holds each layer's stacked projections, used instead
	// of Q, K, V (and their biases) and Gate, Up: the inference Model holds
	// only these.
	Fused []Fused[*Node]
	// RopeCos and RopeSin are the rotary tables [maxPos, headDim/2], see RopeTables.
	RopeCos, RopeSin *Node
}

// Fused is one layer's projections stacked by rows: one large product runs
// faster than three small ones.
type Fused[T any] struct {
	QKV     T // the rows of Q, K and V: [heads*headDim+2*kvHeads*headDim, hidden]
	QKVBias T // their biases stacked, when the config has them
	GateUp  T // the rows of Gate and Up: [2*inter, hidden]
}

// BindNodes binds the decoder of cfg to graph nodes keyed by checkpoint
// tensor name (as the trainer keys its parameters), checking each node's
// shape against the config; cos and sin are the rotary tables. The error
// names the tensor and wraps ErrWeights.
func BindNodes(cfg checkpoint.Config, nodes map[string]*Node, cos, sin *Node) (*Weights, error) {
	d, err := checkpoint.Bind(cfg, func(w checkpoint.Weight) (*Node, error) {
		n := nodes[w.Name]
		if n == nil {
			return nil, checkpoint.ErrMissingTensor
		}
		if got := n.Shape().Dimensions; !slices.Equal(got, w.Shape) {
			return nil, fmt.Errorf("%w: got %v, want %v", checkpoint.ErrShape, got, w.Shape)
		}
		return n, nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrWeights, err)
	}
	return &Weights{Decoder: *d, RopeCos: cos, RopeSin: sin}, nil
}

// RopeTables returns the rotary cos and sin tables [maxPos][headDim/2],
// computed in float64 (with llama3 rope_scaling applied when configured).
func RopeTables(cfg checkpoint.Config, maxPos int) (cos, sin []float32) {
	half := cfg.HeadDim / 2
	inv := make([]float64, half)
	for i := range half {
		inv[i] = 1 / math.Pow(cfg.RopeTheta, float64(2*i)/float64(cfg.HeadDim))
	}
	if rs := cfg.RopeScaling; rs != nil && rs.Factor > 0 {
		switch rs.Type {
		case "llama3":
			lowWave := float64(rs.OriginalMaxPositionEmbeddings) / rs.LowFreqFactor
			highWave := float64(rs.OriginalMaxPositionEmbeddings) / rs.HighFreqFactor
			for i, f := range inv {
				wave := 2 * math.Pi / f
				switch {
				case wave < highWave:
				case wave > lowWave:
					inv[i] = f / rs.Factor
				default:
					smooth := (float64(rs.OriginalMaxPositionEmbeddings)/wave - rs.LowFreqFactor) / (rs.HighFreqFactor - rs.LowFreqFactor)
					inv[i] = (1-smooth)*f/rs.Factor + smooth*f
				}
			}
		case "linear":
			for i := range inv {
				inv[i] /= rs.Factor
			}
		}
	}
	cos = make([]float32, maxPos*half)
	sin = make([]float32, maxPos*half)
	for p := range maxPos {
		for i, f := range inv {
			a := float64(p) * f
			cos[p*half+i] = float32(math.Cos(a))
			sin[p*half+i] = float32(math.Sin(a))
		}
	}
	return cos, sin
}

// Forward returns the logits [B, S, vocab] of a right-padded batch of token
// ids [B, S] (Int32) at positions 0..S-1 with causal attention. Padding at
// the end of a row does not change the logits of the row's real tokens.
func Forward(cfg checkpoint.Config, w *Weights, tokens *Node) *Node {
	g := tokens.Graph()
	b, s := tokens.Shape().Dim(0), tokens.Shape().Dim(1)
	positions := Iota(g, shapes.Make(dtypes.Int32, b, s), 1)
	h := decoderStack(cfg, w, tokens, positions, causalAttention(cfg, nil))
	return linear(h, w.LMHead, nil)
}

// causalMask is [B, S, S]: query i sees keys j <= i (within the sliding
// window when the config has one).
func causalMask(g *Graph, cfg checkpoint.Config, b, s int) *Node {
	q := Iota(g, shapes.Make(dtypes.Int32, b, s, s), 1)
	k := Iota(g, shapes.Make(dtypes.Int32, b, s, s), 2)
	m := LessOrEqual(k, q)
	if cfg.SlidingWindow > 0 {
		m = And(m, GreaterThan(k, SubScalar(q, cfg.SlidingWindow)))
	}
	return m
}

// attendFn computes a layer's attention output [B, C, heads*headDim] from
// its rotated queries [B, C, heads, headDim] and the new keys and values
// [B, C, kvHeads, headDim].
type attendFn func(layer int, q, k, v *Node) *Node

// causalAttention attends each query over the chunk's keys up to its own
// position. record, when set, receives every layer's keys and values.
func causalAttention(cfg checkpoint.Config, record func(layer int, k, v *Node)) attendFn {
	return func(layer int, q, k, v *Node) *Node {
		if record != nil {
			record(layer, k, v)
		}
		b, c := q.Shape().Dim(0), q.Shape().Dim(1)
		nh, nkv, d := cfg.NumHeads, cfg.NumKVHeads, cfg.HeadDim
		grp := nh / nkv
		// Head h uses KV head h/grp (Hugging Face repeat_kv).
		q = Reshape(q, b, c, nkv, grp, d)
		q = MulScalar(q, 1/math.Sqrt(float64(d)))
		// scores [B, kv, C, grp, C]
		scores := DotGeneral(q, []int{4}, []int{0, 2}, k, []int{3}, []int{0, 2})
		mask := causalMask(q.Graph(), cfg, b, c)
		m := BroadcastToDims(Reshape(mask, b, 1, c, 1, c), b, nkv, c, grp, c)
		scores = Where(m, scores, Scalar(q.Graph(), scores.DType(), -1e30))
		probs := Softmax(scores, -1)
		// out [B, kv, C, grp, D]
		out := DotGeneral(probs, []int{4}, []int{0, 1}, v, []int{1}, []int{0, 2})
		return Reshape(Transpose(out, 1, 2), b, c, nh*d)
	}
}

// decoderStack runs the embedding and every layer, and returns the final
// normalised hidden states [B, C, hidden].
func decoderStack(cfg checkpoint.Config, w *Weights, tokens, positions *Node, attend attendFn) *Node {
	x := Gather(w.Embed, InsertAxes(tokens, -1)) // [B, C, hidden]
	cos := Gather(w.RopeCos, InsertAxes(positions, -1))
	sin := Gather(w.RopeSin, InsertAxes(positions, -1))
	cos, sin = InsertAxes(cos, 2), InsertAxes(sin, 2) // [B, C, 1, D/2]
	eps := cfg.RMSNormEps
	b, c := tokens.Shape().Dim(0), tokens.Shape().Dim(1)
	nh, nkv, d := cfg.NumHeads, cfg.NumKVHeads, cfg.HeadDim
	for l := range w.Layers {
		lw := &w.Layers[l]
		h := rmsNorm(x, lw.AttnNorm, eps)
		var q, k, v *Node
		if w.Fused != nil {
			f := &w.Fused[l]
			qkv := linear(h, f.QKV, f.QKVBias)
			q = Slice(qkv, AxisRange(), AxisRange(), AxisRange(0, nh*d))
			k = Slice(qkv, AxisRange(), AxisRange(), AxisRange(nh*d, (nh+nkv)*d))
			v = Slice(qkv, AxisRange(), AxisRange(), AxisRange((nh+nkv)*d, (nh+2*nkv)*d))
		} else {
			q = linear(h, lw.Q, lw.QBias)
			k = linear(h, lw.K, lw.KBias)
			v = linear(h, lw.V, lw.VBias)
		}
		q = rope(Reshape(q, b, c, nh, d), cos, sin)
		k = rope(Reshape(k, b, c, nkv, d), cos, sin)
		v = Reshape(v, b, c, nkv, d)
		x = Add(x, linear(attend(l, q, k, v), lw.O, lw.OBias))
		h = rmsNorm(x, lw.MLPNorm, eps)
		x = Add(x, mlp(w, l, h))
	}
	return rmsNorm(x, w.FinalNorm, eps)
}

// rope rotates x [B, C, H, D] in the rotate-half layout; cos and sin are
// [B, C, 1, D/2]. rotate_half(x) = [-x2, x1] is a product with a constant
// signed permutation, so no Slice is involved (the pure Go backend cannot
// differentiate Slice: its gradient needs Pad).
func rope(x, cos, sin *Node) *Node {
	d := x.Shape().Dim(3)
	rotT := make([][]float32, d) // rotT[j][i] = d rot[j] / d x[i]
	for j := range rotT {
		rotT[j] = make([]float32, d)
		if j < d/2 {
			rotT[j][j+d/2] = -1
		} else {
			rotT[j][j-d/2] = 1
		}
	}
	r := ConvertDType(Const(x.Graph(), rotT), x.DType())
	rot := DotGeneral(x, []int{3}, nil, r, []int{1}, nil)
	cosF := Concatenate([]*Node{cos, cos}, 3)
	sinF := Concatenate([]*Node{sin, sin}, 3)
	return Add(Mul(x, cosF), Mul(rot, sinF))
}

// mlp is layer l's SwiGLU on its normalised input h.
func mlp(w *Weights, l int, h *Node) *Node {
	lw := &w.Layers[l]
	var gate, up *Node
	if w.Fused != nil {
		gateUp := w.Fused[l].GateUp
		gu := linear(h, gateUp, nil)
		inter := gateUp.Shape().Dim(0) / 2
		gate = Slice(gu, AxisRange(), AxisRange(), AxisRange(0, inter))
		up = Slice(gu, AxisRange(), AxisRange(), AxisRange(inter, 2*inter))
	} else {
		gate = linear(h, lw.Gate, nil)
		up = linear(h, lw.Up, nil)
	}
	return linear(Mul(Mul(gate, Sigmoid(gate)), up), lw.Down, nil)
}

// Products of rows*out above smallProductLimit go to the pure Go backend's
// blocked kernel, which pads the rows to blocks of 32 and re-blocks the
// weight on every call: for a few rows (decode at small batch against a
// large vocabulary) splitting the weight's rows into a batch of smaller
// products is much faster and runs them in parallel.
const (
	smallProductLimit = 16 * 1024
	fewRows           = 32
)

// linear is x [..., in] times w [out, in] transposed, plus an optional bias [out].
func linear(x, w, bias *Node) *Node {
	var y *Node
	out, in := w.Shape().Dim(0), w.Shape().Dim(1)
	rows := x.Shape().Size() / in
	if k := splitFactor(rows, out); k > 1 {
		dims := append(x.Shape().Clone().Dimensions[:x.Rank()-1], out)
		xs := BroadcastToDims(Reshape(x, 1, rows, in), k, rows, in)
		ys := DotGeneral(xs, []int{2}, []int{0}, Reshape(w, k, out/k, in), []int{2}, []int{0}) // [k, rows, out/k]
		y = Reshape(TransposeAllAxes(ys, 1, 0, 2), dims...)
	} else if rows%2 == 0 && rows >= fewRows && rows*out <= smallProductLimit && rows*out*in >= 1<<18 {
		// The small kernel parallelises over batch axes only: two halves of
		// the rows against the (broadcast) weight use both cores.
		dims := append(x.Shape().Clone().Dimensions[:x.Rank()-1], out)
		xs := Reshape(x, 2, rows/2, in)
		ws := BroadcastToDims(Reshape(w, 1, out, in), 2, out, in)
		y = Reshape(DotGeneral(xs, []int{2}, []int{0}, ws, []int{2}, []int{0}), dims...)
	} else {
		y = DotGeneral(x, []int{x.Rank() - 1}, nil, w, []int{1}, nil)
	}
	if bias != nil {
		y = Add(y, ExpandLeftToRank(bias, y.Rank()))
	}
	return y
}

func rmsNorm(x, w *Node, eps float64) *Node {
	ms := ReduceAndKeep(Square(x), ReduceMean, -1)
	y := Mul(x, Reciprocal(Sqrt(AddScalar(ms, eps)))) // Rsqrt has no gradient in GoMLX
	return Mul(y, ExpandLeftToRank(w, y.Rank()))
}

// splitFactor is how many row blocks of w a product of rows x [out, in]
// is split into (1: not split).
func splitFactor(rows, out int) int {
	if rows >= fewRows || rows*out <= smallProductLimit {
		return 1
	}
	for k := 2; k <= out; k *= 2 {
		if out%k != 0 {
			return 1
		}
		if rows*out/k <= smallProductLimit {
			return k
		}
	}
	return 1
}
