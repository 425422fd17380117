package train

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/gomlx/gomlx/backends"
	_ "github.com/gomlx/gomlx/backends/simplego" // the pure Go backend
	"github.com/gomlx/gomlx/pkg/core/dtypes"
	. "github.com/gomlx/gomlx/pkg/core/graph" //nolint:revive,staticcheck // the GoMLX convention for graph code
	"github.com/gomlx/gomlx/pkg/core/shapes"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/rs/zerolog"

	"github.com/largeforge/largeforge/model"
	"github.com/largeforge/largeforge/model/checkpoint"
	"github.com/largeforge/largeforge/schemas"
)

// AdamW constants (PyTorch defaults).
const (
	Beta1   = 0.9
	Beta2   = 0.999
	Epsilon = 1e-8
)

// Trainer runs full-parameter SFT of one model. Its weights and AdamW
// moments stay backend tensors between steps; each batch shape (rows,
// padded length) compiles its gradient graph once. A Trainer is not safe
// for concurrent use.
type Trainer struct {
	cfg    schemas.TrainingConfig
	mcfg   checkpoint.Config
	gen    checkpoint.GenerationConfig
	opts   options
	log    zerolog.Logger
	be     backends.Backend
	maxLen int
	padID  int32

	names            []string // trainable tensors, sorted
	frozenNames      []string // frozen base tensors under LoRA, sorted
	frozen           []*tensors.Tensor
	lora             *loraState
	decay            []bool // weight decay applies (not norms, not biases)
	params, mom, vel []*tensors.Tensor
	ropeCos, ropeSin *tensors.Tensor

	graphs map[graphKey]*Graph

	metrics *metrics
	optim   optimizer
	engine  string     // schemas.TrainEngineNative or TrainEngineGraph
	native  *nativeSFT // the native engine of SFT (nil on graph)

	step    int // optimizer steps taken
	history []map[string]any
	// stepEval is the evaluation of the step in hand, reported with its
	// Progress (hooks.go) and cleared after.
	stepEval *EvalResult
	// epochTokens are the tokens of one epoch's training rows (a DPO
	// pair's both sides): trainer_state's num_input_tokens_seen is them
	// times the epochs done.
	epochTokens int
}

type graphKey struct {
	kind       string
	rows, cols int
}

// New builds a Trainer for cfg from a loaded base checkpoint; cfg is
// validated first. The checkpoint's tensors are copied.
func New(cfg schemas.TrainingConfig, ck *checkpoint.Checkpoint, opts ...Option) (t *Trainer, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("new trainer: %w", err)
	}
	if _, err := NewSchedule(cfg, 0, 1); err != nil {
		return nil, err
	}
	optim, err := newOptimizer(cfg)
	if err != nil {
		return nil, err
	}
	if ck == nil {
		return nil, fmt.Errorf("%w: nil checkpoint", ErrInvalidOption)
	}
	o := options{logger: zerolog.Nop(), seed: DefaultSeed}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	var mx *metrics
	if o.registerer != nil {
		if mx, err = newMetrics(o.registerer); err != nil {
			return nil, err
		}
	}
	installDotGeneralVJP()
	mcfg := ck.Config
	if err := checkpoint.CheckTensors(mcfg, ck.Tensors, "base"); err != nil {
		return nil, fmt.Errorf("new trainer: %w", err)
	}
	maxLen, err := SeqLen(o.maxSeqLen, mcfg)
	if err != nil {
		return nil, fmt.Errorf("new trainer: %w", err)
	}
	bname := o.backend
	if bname == "" {
		bname = model.DefaultBackend
	}
	be, err := newBackend(bname)
	if err != nil {
		return nil, err
	}
	t = &Trainer{metrics: mx, optim: optim, cfg: cfg, mcfg: mcfg, gen: ck.Generation, opts: o, log: o.logger, be: be, maxLen: maxLen, graphs: map[graphKey]*Graph{}}
	switch {
	case ck.Generation.PadTokenID != nil && *ck.Generation.PadTokenID < mcfg.VocabSize:
		t.padID = int32(*ck.Generation.PadTokenID)
	case len(mcfg.EOSTokenIDs) > 0:
		t.padID = int32(mcfg.EOSTokenIDs[0])
	}
	var base []string
	for n := range checkpoint.ExpectedTensors(mcfg) {
		base = append(base, n)
	}
	slices.Sort(base)
	init := map[string]*checkpoint.Tensor{}
	if o.lora != nil {
		if t.lora, init, err = newLoRA(mcfg, *o.lora, o.seed); err != nil {
			be.Finalize()
			return nil, err
		}
		for _, n := range base {
			if t.lora.trainsBias(n) {
				peft := "base_model.model." + n
				t.lora.biases = append(t.lora.biases, loraBias{base: n, peft: peft})
				init[peft] = &checkpoint.Tensor{Shape: slices.Clone(ck.Tensors[n].Shape), Data: slices.Clone(ck.Tensors[n].Data)}
				continue
			}
			t.frozenNames = append(t.frozenNames, n)
		}
		for n := range init {
			t.names = append(t.names, n)
		}
		slices.Sort(t.names)
		for _, n := range t.frozenNames {
			t.frozen = append(t.frozen, tensors.FromFlatDataAndDimensions(ck.Tensors[n].Data, ck.Tensors[n].Shape...))
		}
	} else {
		t.names = base
		for _, n := range base {
			init[n] = &checkpoint.Tensor{Shape: ck.Tensors[n].Shape, Data: slices.Clone(ck.Tensors[n].Data)}
		}
	}
	for _, n := range t.names {
		src := init[n]
		t.params = append(t.params, tensors.FromFlatDataAndDimensions(src.Data, src.Shape...))
		ms, vs := optim.stateShapes(src.Shape)
		t.mom = append(t.mom, tensors.FromShape(shapes.Make(dtypes.Float32, ms...)))
		t.vel = append(t.vel, tensors.FromShape(shapes.Make(dtypes.Float32, vs...)))
		t.decay = append(t.decay, !strings.HasSuffix(n, "norm.weight") && !strings.HasSuffix(n, ".bias"))
	}
	t.engine = resolveEngine(o.engine, bname)
	if t.engine == schemas.TrainEngineNative {
		if t.native, err = t.newNative(); err != nil {
			be.Finalize()
			return nil, err
		}
	}
	cos, sin := model.RopeTables(mcfg, maxLen)
	t.ropeCos = tensors.FromFlatDataAndDimensions(cos, maxLen, mcfg.HeadDim/2)
	t.ropeSin = tensors.FromFlatDataAndDimensions(sin, maxLen, mcfg.HeadDim/2)
	if cfg.FP16 || cfg.BF16 {
		half := "bf16"
		if cfg.FP16 {
			half = "fp16"
		}
		t.log.Info().Str("requested", half).Str("precision", "float32").Str("backend", bname).
			Msg(half + " requested: this engine computes in float32")
	}
	t.log.Info().Str("backend", bname).Str("engine", t.engine).Str("precision", "float32").Str("optim", cfg.Optim).
		Int("parameters", t.NumParameters()).Int("max_seq_len", maxLen).Msg("trainer ready")
	return t, nil
}

func newBackend(name string) (b backends.Backend, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: backend %q: %v", ErrBackend, name, r)
		}
	}()
	b, err = backends.NewWithConfig(name)
	if err != nil {
		return nil, fmt.Errorf("%w: backend %q: %w", ErrBackend, name, err)
	}
	return b, nil
}

// NumParameters is the count of trained values.
func (t *Trainer) NumParameters() int {
	n := 0
	for _, p := range t.params {
		n += p.Shape().Size()
	}
	return n
}

// MaxSeqLen is the longest sequence the trainer takes.
func (t *Trainer) MaxSeqLen() int { return t.maxLen }

// GlobalStep is the number of optimizer steps taken.
func (t *Trainer) GlobalStep() int { return t.step }

// Close releases the backend and every tensor.
func (t *Trainer) Close() error {
	for _, g := range t.graphs {
		g.Finalize()
	}
	t.graphs = nil
	for _, ts := range [][]*tensors.Tensor{t.params, t.mom, t.vel, t.frozen} {
		for _, x := range ts {
			_ = x.FinalizeAll()
		}
	}
	t.be.Finalize()
	return nil
}

// weightNodes creates the trainable parameters (in t.names order) and the
// rope tables of g, and returns them keyed by checkpoint name plus the list.
func (t *Trainer) weightNodes(g *Graph, prefix string) (map[string]*Node, []*Node) {
	nodes := map[string]*Node{}
	list := make([]*Node, len(t.names))
	for i, n := range t.names {
		list[i] = Parameter(g, prefix+n, t.params[i].Shape())
		nodes[n] = list[i]
	}
	return nodes, list
}

// modelNodes creates the trainable parameters, then the frozen ones (under
// LoRA) and the rope tables, and returns the model's weights bound to them
// (LoRA-adapted weights merged in the graph) and the trainable list. Its
// parameters take modelArgs, then the rope tables.
func (t *Trainer) modelNodes(g *Graph) (*model.Weights, []*Node) {
	return t.modelNodesDrop(g, false)
}

// modelNodesDrop is modelNodes; with dropout (under LoRA with a
// lora_dropout) it also declares, after the rope tables, one mask per
// adapter (dropMaskArgs) that scales the columns of lora_A: the adapter's
// input features are dropped, one mask per micro-batch.
func (t *Trainer) modelNodesDrop(g *Graph, dropout bool) (*model.Weights, []*Node) {
	nodes, list := t.weightNodes(g, "")
	if t.lora == nil {
		cos, sin := t.ropeNodes(g)
		return t.bind(nodes, cos, sin), list
	}
	base := map[string]*Node{}
	for i, n := range t.frozenNames {
		base[n] = Parameter(g, "frozen."+n, t.frozen[i].Shape())
	}
	for _, b := range t.lora.biases {
		base[b.base] = nodes[b.peft]
	}
	cos, sin := t.ropeNodes(g)
	for i, a := range t.lora.adapters {
		la := nodes[a.a]
		if dropout && t.lora.dropout() {
			r, in := la.Shape().Dim(0), la.Shape().Dim(1)
			mask := Parameter(g, fmt.Sprintf("lora_dropout.%d", i), shapes.Make(dtypes.Float32, in))
			la = Mul(la, BroadcastToDims(Reshape(mask, 1, in), r, in))
		}
		ba := DotGeneral(nodes[a.b], []int{1}, nil, la, []int{0}, nil) // [out, in]
		base[a.base] = Add(base[a.base], MulScalar(ba, t.lora.scale))
	}
	return t.bind(base, cos, sin), list
}

// dropMasks are the lora_dropout masks of micro-batch micro of optimizer
// step step (nil without dropout), one per adapter over its input
// features: 0 with probability lora_dropout, else 1/(1-lora_dropout), from
// the seed, the step and the micro-batch only (a resumed run draws the
// same masks).
func (t *Trainer) dropMasks(step, micro int) [][]float32 {
	if t.lora == nil || !t.lora.dropout() {
		return nil
	}
	p := t.lora.cfg.LoraDropout
	rng := rand.New(rand.NewPCG(uint64(t.opts.seed), uint64(step)<<20|uint64(micro)<<1|1))
	out := make([][]float32, 0, len(t.lora.adapters))
	for _, a := range t.lora.adapters {
		m := make([]float32, a.in)
		for j := range m {
			if rng.Float64() >= p {
				m[j] = float32(1 / (1 - p))
			}
		}
		out = append(out, m)
	}
	return out
}

// dropMaskArgs are dropMasks as the graphs' parameters (nil without dropout).
func (t *Trainer) dropMaskArgs(step, micro int) []any {
	masks := t.dropMasks(step, micro)
	if masks == nil {
		return nil
	}
	out := make([]any, len(masks))
	for i, m := range masks {
		out[i] = tensors.FromFlatDataAndDimensions(m, len(m))
	}
	return out
}

// modelArgs are the values of modelNodes' parameters, rope tables included.
func (t *Trainer) modelArgs() []any {
	args := t.weightArgs()
	for _, f := range t.frozen {
		args = append(args, f)
	}
	return append(args, t.ropeCos, t.ropeSin)
}

// ropeNodes declares the rotary tables (their values are the last of modelArgs).
func (t *Trainer) ropeNodes(g *Graph) (cos, sin *Node) {
	return Parameter(g, "rope.cos", t.ropeCos.Shape()), Parameter(g, "rope.sin", t.ropeSin.Shape())
}

// bind binds the decoder to nodes keyed by checkpoint tensor name. New
// checked the tensors, so an error here is a bug: it panics, and graph
// turns the panic into an error.
func (t *Trainer) bind(nodes map[string]*Node, cos, sin *Node) *model.Weights {
	w, err := model.BindNodes(t.mcfg, nodes, cos, sin)
	if err != nil {
		panic(err)
	}
	return w
}

// tokenLogprobs is log softmax(logits)[next] for logits [B, S, V] and next [B, S].
func tokenLogprobs(logits, next *Node) *Node {
	v := logits.Shape().Dim(-1)
	mx := StopGradient(ReduceAndKeep(logits, ReduceMax, -1))
	shifted := Sub(logits, mx)
	lse := Log(ReduceSum(Exp(shifted), -1))
	picked := ReduceSum(Mul(shifted, OneHot(next, v, logits.DType())), -1)
	return Sub(picked, lse)
}

// batchInputs declares the batch parameters.
func batchInputs(g *Graph, rows, cols int) (tok, tgt, w *Node) {
	tok = Parameter(g, "tokens", shapes.Make(dtypes.Int32, rows, cols))
	tgt = Parameter(g, "targets", shapes.Make(dtypes.Int32, rows, cols))
	w = Parameter(g, "weights", shapes.Make(dtypes.Float32, rows, cols))
	return tok, tgt, w
}

// graph compiles (once per key) the graph build returns the outputs of.
func (t *Trainer) graph(key graphKey, build func(g *Graph) []*Node) (g *Graph, err error) {
	if g, ok := t.graphs[key]; ok {
		return g, nil
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: compile %s %dx%d: %v", ErrBackend, key.kind, key.rows, key.cols, r)
			if g != nil {
				g.Finalize()
				g = nil
			}
		}
	}()
	start := time.Now()
	g = NewGraph(t.be, fmt.Sprintf("%s_%d_%d", key.kind, key.rows, key.cols))
	g.Compile(build(g)...)
	t.graphs[key] = g
	t.log.Debug().Str("graph", key.kind).Ints("shape", []int{key.rows, key.cols}).Dur("took", time.Since(start)).Msg("compiled graph")
	return g, nil
}

// run runs g, turning a GoMLX panic into an error.
func run(g *Graph, args ...any) (out []*tensors.Tensor, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: run %s: %v", ErrBackend, g.Name(), r)
		}
	}()
	return g.Run(args...), nil
}

// gradGraph is the forward and backward pass of one micro-batch: it
// returns the gradients of the summed weighted negative log-likelihood
// (added to the accumulators unless first), the summed loss and the summed
// weight.
func (t *Trainer) gradGraph(rows, cols int, first bool) (*Graph, error) {
	kind := "grad_acc"
	if first {
		kind = "grad"
	}
	return t.graph(graphKey{kind, rows, cols}, func(g *Graph) []*Node {
		mw, ps := t.modelNodesDrop(g, true)
		var acc []*Node
		if !first {
			_, acc = t.weightNodes(g, "acc.")
		}
		tok, tgt, w := batchInputs(g, rows, cols)
		lp := tokenLogprobs(model.Forward(t.mcfg, mw, tok), tgt)
		nll := Neg(ReduceAllSum(Mul(lp, w)))
		grads := Gradient(nll, ps...)
		if !first {
			for i := range grads {
				grads[i] = Add(acc[i], grads[i])
			}
		}
		return append(grads, nll, ReduceAllSum(w))
	})
}

// lossGraph is the forward pass only: summed loss, summed weight, and the
// count of weighted targets predicted exactly (argmax).
func (t *Trainer) lossGraph(rows, cols int) (*Graph, error) {
	return t.graph(graphKey{"loss", rows, cols}, func(g *Graph) []*Node {
		mw, _ := t.modelNodes(g)
		tok, tgt, w := batchInputs(g, rows, cols)
		logits := model.Forward(t.mcfg, mw, tok)
		lp := tokenLogprobs(logits, tgt)
		hit := ConvertDType(Equal(ConvertDType(ArgMax(logits, -1), dtypes.Int32), tgt), dtypes.Float32)
		return []*Node{Neg(ReduceAllSum(Mul(lp, w))), ReduceAllSum(w), ReduceAllSum(Mul(hit, w))}
	})
}

// logitsGraph is the forward pass returning logits.
func (t *Trainer) logitsGraph(rows, cols int) (*Graph, error) {
	return t.graph(graphKey{"logits", rows, cols}, func(g *Graph) []*Node {
		mw, _ := t.modelNodes(g)
		tok := Parameter(g, "tokens", shapes.Make(dtypes.Int32, rows, cols))
		return []*Node{model.Forward(t.mcfg, mw, tok)}
	})
}

// applyGraph is the optimizer update: gradients are the accumulators divided by
// the window's summed weight, clipped to max_grad_norm; it returns the new
// parameters, moments, and the gradient norm before clipping.
func (t *Trainer) applyGraph() (*Graph, error) {
	return t.graph(graphKey{"optimizer", 0, 0}, func(g *Graph) []*Node {
		_, ps := t.weightNodes(g, "")
		ms, vs := t.stateNodes(g)
		_, acc := t.weightNodes(g, "acc.")
		return t.optimizerNodes(g, ps, ms, vs, acc, Parameter(g, "weight_sum", shapes.Make(dtypes.Float32)))
	})
}

// stateNodes declares the optimizer states: every m, then every v (in
// t.names order).
func (t *Trainer) stateNodes(g *Graph) (ms, vs []*Node) {
	ms, vs = make([]*Node, len(t.names)), make([]*Node, len(t.names))
	for i, n := range t.names {
		ms[i] = Parameter(g, "m."+n, t.mom[i].Shape())
	}
	for i, n := range t.names {
		vs[i] = Parameter(g, "v."+n, t.vel[i].Shape())
	}
	return ms, vs
}

// stepGraph is the last micro-batch of a window and the optimizer step in
// one graph (one execution, no gradient buffers handed back): the
// forward and backward pass (added to the accumulators when withAcc), then
// AdamW over the window's weight (prior_weight_sum plus this batch's). It
// returns the new parameters, moments, the gradient norm, and the batch's
// summed loss and weight.
func (t *Trainer) stepGraph(rows, cols int, withAcc bool) (*Graph, error) {
	kind := "step"
	if withAcc {
		kind = "step_acc"
	}
	return t.graph(graphKey{kind, rows, cols}, func(g *Graph) []*Node {
		mw, ps := t.modelNodesDrop(g, true)
		var acc []*Node
		if withAcc {
			_, acc = t.weightNodes(g, "acc.")
		}
		tok, tgt, w := batchInputs(g, rows, cols)
		ms, vs := t.stateNodes(g)
		prior := Parameter(g, "prior_weight_sum", shapes.Make(dtypes.Float32))
		lp := tokenLogprobs(model.Forward(t.mcfg, mw, tok), tgt)
		nll := Neg(ReduceAllSum(Mul(lp, w)))
		wsum := ReduceAllSum(w)
		grads := Gradient(nll, ps...)
		if withAcc {
			for i := range grads {
				grads[i] = Add(acc[i], grads[i])
			}
		}
		out := t.optimizerNodes(g, ps, ms, vs, grads, Add(prior, wsum))
		return append(out, nll, wsum)
	})
}

// bucket is the padded length of a batch whose longest row is n: the
// smallest of a fixed set (16, 32, 48, 64, then four steps per doubling:
// 80, 96, 112, 128, 160, ..., 256, 320, ...) that holds n, at most the
// maximum length. Each length compiles its graphs once, and padding adds
// at most a quarter to a batch.
func (t *Trainer) bucket(n int) int {
	return min(bucketLen(n), t.maxLen)
}

func bucketLen(n int) int {
	if n <= 64 {
		return max(16, (n+15)/16*16)
	}
	step := 16
	for lo := 128; lo < n; lo *= 2 {
		step *= 2
	}
	return (n + step - 1) / step * step
}

func (t *Trainer) batchArgs(b Batch) []any {
	return []any{
		tensors.FromFlatDataAndDimensions(b.Tokens, b.Rows, b.Len),
		tensors.FromFlatDataAndDimensions(b.Targets, b.Rows, b.Len),
		tensors.FromFlatDataAndDimensions(b.Weights, b.Rows, b.Len),
	}
}

func (t *Trainer) weightArgs() []any {
	args := make([]any, 0, len(t.params)+2)
	for _, p := range t.params {
		args = append(args, p)
	}
	return args
}

func (t *Trainer) makeBatch(exs []Example, rows int) Batch {
	longest := 0
	for _, e := range exs {
		longest = max(longest, len(e.Tokens))
	}
	return MakeBatch(exs, rows, t.bucket(longest), t.padID)
}

// microStep runs forward and backward on micro-batch micro (counted within
// the window, for the dropout masks), adding its gradients to acc (nil on
// the first micro-batch of a window).
func (t *Trainer) microStep(b Batch, acc []*tensors.Tensor, micro int) (newAcc []*tensors.Tensor, lossSum, wSum float64, err error) {
	g, err := t.gradGraph(b.Rows, b.Len, acc == nil)
	if err != nil {
		return nil, 0, 0, err
	}
	args := append(t.modelArgs(), t.dropMaskArgs(t.step, micro)...)
	for _, a := range acc {
		args = append(args, a)
	}
	args = append(args, t.batchArgs(b)...)
	out, err := run(g, args...)
	if err != nil {
		return nil, 0, 0, err
	}
	for _, a := range acc {
		_ = a.FinalizeAll()
	}
	n := len(t.params)
	lossSum = scalarOf(out[n])
	wSum = scalarOf(out[n+1])
	return out[:n], lossSum, wSum, nil
}

// apply takes one optimizer step from the accumulated gradients.
func (t *Trainer) apply(acc []*tensors.Tensor, wSum, lr float64) (gradNorm float64, err error) {
	g, err := t.applyGraph()
	if err != nil {
		return 0, err
	}
	step := float64(t.step + 1)
	args := t.weightArgs()
	for _, ts := range [][]*tensors.Tensor{t.mom, t.vel, acc} {
		for _, x := range ts {
			args = append(args, x)
		}
	}
	s1, s2 := t.optim.stepScalars(step)
	args = append(args, float32(wSum), float32(lr), s1, s2)
	out, err := run(g, args...)
	if err != nil {
		return 0, err
	}
	n := len(t.params)
	t.takeState(out, acc)
	return scalarOf(out[3*n]), nil
}

// takeState frees the parameters, moments and accumulators an optimizer
// execution consumed and takes its first outputs as the new parameters and
// moments, one step on.
func (t *Trainer) takeState(out, acc []*tensors.Tensor) {
	n := len(t.params)
	for _, ts := range [][]*tensors.Tensor{t.params, t.mom, t.vel, acc} {
		for _, x := range ts {
			_ = x.FinalizeAll()
		}
	}
	t.params = out[:n]
	t.mom = out[n : 2*n]
	t.vel = out[2*n : 3*n]
	t.step++
}

// trainStep runs the last micro-batch b of a window (number micro within
// it; acc holds the earlier ones' gradients, nil when b is the first) and the AdamW step at learning
// rate lr in one execution; priorW is the earlier micro-batches' summed
// weight. The parameters and moments are donated to the execution and
// replaced by its outputs.
func (t *Trainer) trainStep(b Batch, acc []*tensors.Tensor, priorW, lr float64, micro int) (lossSum, wSum, gradNorm float64, err error) {
	g, err := t.stepGraph(b.Rows, b.Len, acc != nil)
	if err != nil {
		return 0, 0, 0, err
	}
	n := len(t.params)
	args := make([]any, 0, 4*n+len(t.frozen)+9)
	for _, p := range t.params {
		args = append(args, t.donate(p))
	}
	for _, f := range t.frozen {
		args = append(args, f)
	}
	args = append(args, t.ropeCos, t.ropeSin)
	args = append(args, t.dropMaskArgs(t.step, micro)...)
	for _, a := range acc {
		args = append(args, t.donate(a))
	}
	args = append(args, t.batchArgs(b)...)
	for _, ts := range [][]*tensors.Tensor{t.mom, t.vel} {
		for _, x := range ts {
			args = append(args, t.donate(x))
		}
	}
	s1, s2 := t.optim.stepScalars(float64(t.step + 1))
	args = append(args, float32(priorW), float32(lr), s1, s2)
	out, err := run(g, args...)
	if err != nil {
		return 0, 0, 0, err
	}
	t.takeState(out, acc)
	return scalarOf(out[3*n+1]), scalarOf(out[3*n+2]), scalarOf(out[3*n]), nil
}

// donate hands x's backend buffer to the next execution, which may write
// its outputs into it instead of allocating (x is not usable after); x
// itself when the buffer cannot be donated.
func (t *Trainer) donate(x *tensors.Tensor) any {
	d, err := DonateTensorBuffer(x, t.be, 0)
	if err != nil {
		return x
	}
	return d
}

func scalarOf(x *tensors.Tensor) float64 {
	defer func() { _ = x.FinalizeAll() }()
	v, err := tensors.CopyFlatData[float32](x)
	if err != nil || len(v) == 0 {
		return math.NaN()
	}
	return float64(v[0])
}

// EvalResult is the §5.2 evaluation of a set of examples.
type EvalResult struct {
	Loss       float64 `json:"eval_loss"`
	Perplexity float64 `json:"perplexity"`
	Accuracy   float64 `json:"accuracy"`
	Tokens     int     `json:"eval_tokens"`
}

// Evaluate returns the mean loss over the response tokens of exs, its
// perplexity and the next-token accuracy.
func (t *Trainer) Evaluate(ctx context.Context, exs []Example) (EvalResult, error) {
	if len(exs) == 0 {
		return EvalResult{}, ErrNoExamples
	}
	rows := t.cfg.PerDeviceBatchSize
	var lossSum, wSum, hits float64
	if t.native != nil {
		var err error
		if lossSum, wSum, hits, err = t.nativeEvaluate(ctx, exs); err != nil {
			return EvalResult{}, err
		}
	}
	for lo := 0; lo < len(exs) && t.native == nil; lo += rows {
		if err := ctx.Err(); err != nil {
			return EvalResult{}, err
		}
		b := t.makeBatch(exs[lo:min(lo+rows, len(exs))], rows)
		g, err := t.lossGraph(b.Rows, b.Len)
		if err != nil {
			return EvalResult{}, err
		}
		out, err := run(g, append(t.modelArgs(), t.batchArgs(b)...)...)
		if err != nil {
			return EvalResult{}, err
		}
		lossSum += scalarOf(out[0])
		wSum += scalarOf(out[1])
		hits += scalarOf(out[2])
	}
	if wSum == 0 {
		return EvalResult{}, fmt.Errorf("%w: no response tokens", ErrNoExamples)
	}
	r := EvalResult{Loss: lossSum / wSum, Accuracy: hits / wSum, Tokens: int(wSum)}
	r.Perplexity = math.Exp(r.Loss)
	return r, nil
}

// Logits returns the logits [len(tokens), vocab] of one sequence under the
// current weights.
func (t *Trainer) Logits(ctx context.Context, tokens []int32) ([]float32, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(tokens) == 0 || len(tokens) > t.maxLen {
		return nil, fmt.Errorf("%w: %d tokens (want 1..%d)", ErrInvalidOption, len(tokens), t.maxLen)
	}
	g, err := t.logitsGraph(1, len(tokens))
	if err != nil {
		return nil, err
	}
	args := append(t.modelArgs(), tensors.FromFlatDataAndDimensions(tokens, 1, len(tokens)))
	out, err := run(g, args...)
	if err != nil {
		return nil, err
	}
	defer func() { _ = out[0].FinalizeAll() }()
	v, err := tensors.CopyFlatData[float32](out[0])
	if err != nil {
		return nil, errors.Join(ErrBackend, err)
	}
	return v, nil
}

// Checkpoint returns the current weights as a checkpoint of the base
// model's config and generation defaults.
func (t *Trainer) Checkpoint() (*checkpoint.Checkpoint, error) {
	ck := &checkpoint.Checkpoint{Config: t.mcfg, Generation: t.gen, Tensors: map[string]*checkpoint.Tensor{}}
	if t.lora != nil {
		ad, err := t.trainable()
		if err != nil {
			return nil, err
		}
		for i, n := range t.frozenNames {
			v, err := tensors.CopyFlatData[float32](t.frozen[i])
			if err != nil {
				return nil, errors.Join(ErrBackend, err)
			}
			ck.Tensors[n] = &checkpoint.Tensor{Shape: slices.Clone(t.frozen[i].Shape().Dimensions), Data: v}
		}
		for _, b := range t.lora.biases {
			ck.Tensors[b.base] = ad[b.peft]
		}
		t.lora.merge(ck.Tensors, ad)
		return ck, nil
	}
	for i, n := range t.names {
		v, err := tensors.CopyFlatData[float32](t.params[i])
		if err != nil {
			return nil, errors.Join(ErrBackend, err)
		}
		ck.Tensors[n] = &checkpoint.Tensor{Shape: t.params[i].Shape().Dimensions, Data: v}
	}
	return ck, nil
}

// trainable returns the trained tensors by name (the adapters under LoRA).
func (t *Trainer) trainable() (map[string]*checkpoint.Tensor, error) {
	out := make(map[string]*checkpoint.Tensor, len(t.names))
	for i, n := range t.names {
		v, err := tensors.CopyFlatData[float32](t.params[i])
		if err != nil {
			return nil, errors.Join(ErrBackend, err)
		}
		out[n] = &checkpoint.Tensor{Shape: slices.Clone(t.params[i].Shape().Dimensions), Data: v}
	}
	return out, nil
}
