package model

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gomlx/gomlx/backends"
	_ "github.com/gomlx/gomlx/backends/simplego" // the default, pure Go backend ("go")
	"github.com/gomlx/gomlx/pkg/core/dtypes"
	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/shapes"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/rs/zerolog"

	"github.com/largeforge/largeforge/model/checkpoint"
)

// BackendEnv is the environment variable that selects the GoMLX backend
// when WithBackend is not given.
const BackendEnv = "GOMLX_BACKEND"

// DefaultBackend is the pure Go backend, used when nothing else is asked
// for. Its ops run one after another (each large product still uses every
// core): as fast here as running independent ops in parallel, and free of
// the data race the race detector reports in simplego's parallel executor.
const DefaultBackend = "go:ops_sequential"

// Model is a Llama-family decoder on a GoMLX backend. Its weights are
// uploaded once and shared by every graph (every batch size and length
// bucket). A Model is safe for concurrent use.
type Model struct {
	cfg     checkpoint.Config
	gen     checkpoint.GenerationConfig
	opts    options
	log     zerolog.Logger
	backend backends.Backend
	bname   string // the backend's configuration name ("go", "xla:cpu", ...)
	maxSeq  int

	held             *held[*tensors.Tensor] // the decoder's weights on the backend
	ropeCos, ropeSin *tensors.Tensor
	weights          []*tensors.Tensor // the held weights, then the rope tables: graph parameter order
	engine           string            // the generation engine: EngineGraph or EngineNative
	native           *nativeDecoder    // the native engine's packed weights, when it is used
	cacheBytes       cacheCounter      // bytes of the live KV caches (MemoryBytes)
	// lazyHost, for a quantized model, is what uploadWeights needs once a
	// graph runs (graphWeights, quant.go).
	lazyHost *held[*checkpoint.Tensor]
	lazyOnce sync.Once
	lazyErr  error

	mu     sync.Mutex
	graphs map[graphKey]*compiledGraph
	closed bool
	runs   sync.WaitGroup
}

type graphKey struct {
	kind       string
	a, b, c, d int
}

type compiledGraph struct {
	once sync.Once
	g    *graph.Graph
	err  error
}

// Load reads a Hugging Face checkpoint directory and builds the Model.
func Load(dir string, opts ...Option) (*Model, error) {
	ck, err := checkpoint.Load(dir)
	if err != nil {
		return nil, fmt.Errorf("load model %s: %w", dir, err)
	}
	return New(ck, opts...)
}

// New builds a Model from a loaded checkpoint: it checks every tensor,
// creates the backend and uploads the weights once.
func New(ck *checkpoint.Checkpoint, opts ...Option) (m *Model, err error) {
	if ck == nil {
		return nil, fmt.Errorf("%w: nil checkpoint", ErrWeights)
	}
	o := defaultOptions()
	if err := applyOptions(&o, opts); err != nil {
		return nil, err
	}
	cfg := ck.Config
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrWeights, err)
	}
	maxSeq := cfg.MaxPositionEmbeddings
	if o.maxSeqLen > 0 {
		maxSeq = o.maxSeqLen
	} else if maxSeq > DefaultMaxSeqLen {
		maxSeq = DefaultMaxSeqLen
	}
	dec, err := checkpoint.BindTensors(cfg, ck.Tensors)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrWeights, err)
	}
	host := fuse(cfg, dec)
	cos, sin := RopeTables(cfg, maxSeq)
	ropeCos := tensors.FromFlatDataAndDimensions(cos, maxSeq, cfg.HeadDim/2)
	ropeSin := tensors.FromFlatDataAndDimensions(sin, maxSeq, cfg.HeadDim/2)

	be, bname, err := newBackend(o.backend)
	if err != nil {
		return nil, err
	}
	engine, err := chooseEngine(o.engine, bname)
	if err != nil {
		be.Finalize()
		return nil, err
	}
	var native *nativeDecoder
	if engine == EngineNative {
		native = newNativeDecoder(cfg, maxSeq, host, cos, sin)
		native.useQuant(host)
	}
	m = &Model{
		cfg: cfg, gen: ck.Generation, opts: o, log: o.logger, backend: be, bname: bname, maxSeq: maxSeq,
		ropeCos: ropeCos, ropeSin: ropeSin, graphs: map[graphKey]*compiledGraph{}, engine: engine, native: native,
	}
	if native != nil && native.quantBytes() > 0 {
		// The graphs' float weights are made when a graph first needs them
		// (quant.go): serving a quantized model holds only its quantized form.
		m.lazyHost = dropQuantized(cfg, host)
	} else if err := m.uploadWeights(host); err != nil {
		be.Finalize()
		return nil, err
	}
	o.logger.Info().Str("backend", bname).Str("backend_description", be.Description()).Str("engine", engine).
		Str("architecture", cfg.Architecture).Int("layers", cfg.NumLayers).Int("hidden", cfg.HiddenSize).
		Int("vocab", cfg.VocabSize).Int("max_seq_len", maxSeq).Msg("model loaded")
	return m, nil
}

// uploadWeights puts the float weights of host on the backend: the graphs'
// parameters.
func (m *Model) uploadWeights(host *held[*checkpoint.Tensor]) (err error) {
	held := mapHeld(m.cfg, host, func(t *checkpoint.Tensor) *tensors.Tensor {
		return tensors.FromFlatDataAndDimensions(t.Data, t.Shape...)
	})
	weights := append(heldTensors(m.cfg, held), m.ropeCos, m.ropeSin)
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: upload weights: %v", ErrBackend, r)
		}
	}()
	for _, t := range weights {
		t.MustMaterializeOnDevice(m.backend, false, 0)
		t.FinalizeLocal()
	}
	m.mu.Lock()
	m.held, m.weights = held, weights
	m.mu.Unlock()
	return nil
}

// chooseEngine resolves the generation engine: asked (or LARGEFORGE_ENGINE),
// else native on the pure Go backend and graph on any other.
func chooseEngine(asked, backend string) (string, error) {
	if asked == "" {
		asked = os.Getenv(EngineEnv)
	}
	switch asked {
	case EngineGraph, EngineNative:
		return asked, nil
	case "":
		if kind, _, _ := strings.Cut(backend, ":"); kind == "go" {
			return EngineNative, nil
		}
		return EngineGraph, nil
	}
	return "", fmt.Errorf("%w: engine %q, want %q or %q", ErrInvalidOption, asked, EngineGraph, EngineNative)
}

func (m *Model) isClosed() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.closed
}

// Engine returns the generation engine in use: EngineGraph or EngineNative.
func (m *Model) Engine() string { return m.engine }

// newBackend creates the backend named by name, GOMLX_BACKEND, or the pure Go default.
func newBackend(name string) (b backends.Backend, _ string, err error) {
	if name == "" {
		name = os.Getenv(BackendEnv)
	}
	if name == "" {
		name = DefaultBackend
	}
	kind, _, _ := strings.Cut(name, ":")
	if !slices.Contains(backends.List(), kind) {
		return nil, "", fmt.Errorf("%w: backend %q is not compiled in (have %v; XLA needs the build tag xla)", ErrBackend, kind, backends.List())
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: backend %q: %v", ErrBackend, name, r)
		}
	}()
	b, err = backends.NewWithConfig(name)
	if err != nil {
		return nil, "", fmt.Errorf("%w: backend %q: %w", ErrBackend, name, err)
	}
	return b, name, nil
}

// Config returns the model's configuration.
func (m *Model) Config() checkpoint.Config { return m.cfg }

// GenerationConfig returns the checkpoint's generation defaults.
func (m *Model) GenerationConfig() checkpoint.GenerationConfig { return m.gen }

// MaxSeqLen is the longest context (prompt plus completion) the model runs.
func (m *Model) MaxSeqLen() int { return m.maxSeq }

// Backend returns the configuration name of the GoMLX backend in use
// ("go" for the pure Go backend).
func (m *Model) Backend() string { return m.bname }

// Close releases the compiled graphs, the weights and the backend. It waits
// for running calls to end.
func (m *Model) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	m.mu.Unlock()
	m.runs.Wait()
	for _, c := range m.graphs {
		if c.g != nil {
			c.g.Finalize()
		}
	}
	for _, t := range m.weights {
		t.FinalizeAll()
	}
	m.backend.Finalize()
	return nil
}

// weightParams creates the weight parameters of g, in m.weights order.
func (m *Model) weightParams(g *graph.Graph) *Weights {
	i := 0
	nodes := mapHeld(m.cfg, m.held, func(t *tensors.Tensor) *graph.Node {
		i++
		return graph.Parameter(g, fmt.Sprintf("weight%d", i), t.Shape())
	})
	return &Weights{
		Decoder: *nodes.dec, Fused: nodes.fused,
		RopeCos: graph.Parameter(g, "rope.cos", m.ropeCos.Shape()),
		RopeSin: graph.Parameter(g, "rope.sin", m.ropeSin.Shape()),
	}
}

// run compiles (once per key) and runs a graph. build creates the graph's
// parameters after the weights (when withWeights) and returns its outputs;
// inputs are the values of those extra parameters (tensors, Go slices, or
// donated buffers).
func (m *Model) run(ctx context.Context, key graphKey, withWeights bool, build func(g *graph.Graph, w *Weights) []*graph.Node, inputs ...any) (out []*tensors.Tensor, err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, ErrClosed
	}
	m.runs.Add(1)
	c, ok := m.graphs[key]
	if !ok {
		c = &compiledGraph{}
		m.graphs[key] = c
	}
	m.mu.Unlock()
	defer m.runs.Done()
	if withWeights {
		if err := m.graphWeights(); err != nil {
			return nil, err
		}
	}

	c.once.Do(func() {
		start := time.Now()
		c.g, c.err = m.compile(key, withWeights, build)
		m.log.Info().Str("graph", key.kind).Ints("shape", []int{key.a, key.b, key.c, key.d}).
			Dur("took", time.Since(start)).Err(c.err).Msg("compiled graph")
	})
	if c.err != nil {
		return nil, c.err
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: run %s%v: %v", ErrBackend, key.kind, []int{key.a, key.b, key.c, key.d}, r)
		}
	}()
	args := inputs
	if withWeights {
		args = make([]any, 0, len(m.weights)+len(inputs))
		for _, t := range m.weights {
			args = append(args, t)
		}
		args = append(args, inputs...)
	}
	return c.g.Run(args...), nil
}

func (m *Model) compile(key graphKey, withWeights bool, build func(g *graph.Graph, w *Weights) []*graph.Node) (g *graph.Graph, err error) {
	defer func() {
		if r := recover(); r != nil {
			if e, ok := r.(error); ok {
				err = fmt.Errorf("%w: compile %s: %w", ErrBackend, key.kind, e)
			} else {
				err = fmt.Errorf("%w: compile %s: %v", ErrBackend, key.kind, r)
			}
			if g != nil {
				g.Finalize()
				g = nil
			}
		}
	}()
	g = graph.NewGraph(m.backend, fmt.Sprintf("%s_%d_%d_%d_%d", key.kind, key.a, key.b, key.c, key.d))
	var w *Weights
	if withWeights {
		w = m.weightParams(g)
	}
	outs := build(g, w)
	g.Compile(outs...)
	return g, nil
}

// ints makes a graph input of int32 values with the given dimensions,
// donated to the run that takes it (freed as soon as it is used).
func (m *Model) ints(vals []int32, dims ...int) any {
	t := tensors.FromFlatDataAndDimensions(vals, dims...)
	d, err := graph.DonateTensorBuffer(t, m.backend, 0)
	if err != nil {
		return t
	}
	return d
}

func param(g *graph.Graph, name string, dt dtypes.DType, dims ...int) *graph.Node {
	return graph.Parameter(g, name, shapes.Make(dt, dims...))
}

// float32s copies a float32 tensor's values out and releases the tensor.
func float32s(t *tensors.Tensor) ([]float32, error) {
	defer t.FinalizeAll()
	v, err := tensors.CopyFlatData[float32](t)
	if err != nil {
		return nil, errors.Join(ErrBackend, err)
	}
	return v, nil
}

// pow2 is the smallest power of two >= n (at least lo).
func pow2(n, lo int) int {
	p := lo
	for p < n {
		p *= 2
	}
	return p
}
