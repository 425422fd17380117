// Package classifier is the learned stage of expert routing: a small GoMLX
// text classifier that maps a prompt to a probability per expert name.
//
// Features are hashed (FNV-1a into Dim buckets) counts of the prompt's
// lower-cased words, word bigrams and character trigrams, L2-normalized; the
// model is a linear softmax over the experts (a weight matrix [Dim, experts]
// and a bias), trained with Adam and an L2 penalty in a GoMLX graph on the
// pure Go backend. It is saved as a directory:
//
//	router.json        Meta: format, labels (expert names, output order), dim, features, training figures
//	model.safetensors  F32 tensors "weight" [dim, labels] and "bias" [labels]
//
// Labeled rows are JSONL: {"prompt": "...", "expert": "code"}, one a line.
package classifier

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/gomlx/gomlx/backends"
	_ "github.com/gomlx/gomlx/backends/simplego" // the pure Go backend
	"github.com/gomlx/gomlx/pkg/core/dtypes"
	. "github.com/gomlx/gomlx/pkg/core/graph" //nolint:revive // graph ops read as math
	"github.com/gomlx/gomlx/pkg/core/shapes"
	"github.com/gomlx/gomlx/pkg/core/tensors"

	"github.com/largeforge/largeforge/model/checkpoint"
)

// File names and format of a saved model directory.
const (
	MetaFile    = "router.json"
	WeightsFile = "model.safetensors"
	Format      = "largeforge-router-v1"
	// Features names the feature extraction this package implements.
	Features = "fnv1a:words+bigrams+char3:l2"
)

// Config defaults.
const (
	DefaultDim          = 4096
	DefaultEpochs       = 20
	DefaultBatchSize    = 32
	DefaultLearningRate = 0.05
	DefaultL2           = 1e-5
	DefaultSeed         = 1
	// BackendEnv selects the GoMLX backend (default DefaultBackend).
	BackendEnv = "GOMLX_BACKEND"
	// DefaultBackend is the pure Go backend running ops one after another
	// (as the model package does): the graphs are tiny, and it keeps the
	// race detector quiet.
	DefaultBackend = "go:ops_sequential"
)

// Config configures training. Zero fields take the defaults.
type Config struct {
	Dim          int     // hashed feature buckets, a power of two (default 4096)
	Epochs       int     // passes over the training rows (default 20)
	BatchSize    int     // rows per Adam step (default 32)
	LearningRate float64 // Adam step size (default 0.05)
	L2           float64 // weight penalty (default 1e-5)
	Seed         uint64  // shuffling seed (default 1)
	Backend      string  // GoMLX backend config; "" reads GOMLX_BACKEND, else DefaultBackend
}

// Validate checks the config; errors wrap ErrInvalidOption.
func (c Config) Validate() error {
	switch {
	case c.Dim < 0 || c.Dim > 1<<20 || (c.Dim > 0 && c.Dim&(c.Dim-1) != 0):
		return fmt.Errorf("%w: dim %d: want a power of two up to 1048576", ErrInvalidOption, c.Dim)
	case c.Epochs < 0 || c.Epochs > 10000:
		return fmt.Errorf("%w: epochs %d: want 1..10000", ErrInvalidOption, c.Epochs)
	case c.BatchSize < 0 || c.BatchSize > 65536:
		return fmt.Errorf("%w: batch size %d: want 1..65536", ErrInvalidOption, c.BatchSize)
	case c.LearningRate < 0 || math.IsNaN(c.LearningRate) || c.LearningRate > 10:
		return fmt.Errorf("%w: learning rate %v: want (0, 10]", ErrInvalidOption, c.LearningRate)
	case c.L2 < 0 || math.IsNaN(c.L2):
		return fmt.Errorf("%w: l2 %v is negative", ErrInvalidOption, c.L2)
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.Dim == 0 {
		c.Dim = DefaultDim
	}
	if c.Epochs == 0 {
		c.Epochs = DefaultEpochs
	}
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.LearningRate == 0 {
		c.LearningRate = DefaultLearningRate
	}
	if c.L2 == 0 {
		c.L2 = DefaultL2
	}
	if c.Seed == 0 {
		c.Seed = DefaultSeed
	}
	if c.Backend == "" {
		c.Backend = os.Getenv(BackendEnv)
	}
	if c.Backend == "" {
		c.Backend = DefaultBackend
	}
	return c
}

// Meta is router.json.
type Meta struct {
	Format        string   `json:"format"`
	Features      string   `json:"features"`
	Dim           int      `json:"dim"`
	Labels        []string `json:"labels"`
	TrainRows     int      `json:"train_rows,omitempty"`
	Epochs        int      `json:"epochs,omitempty"`
	TrainAccuracy float64  `json:"train_accuracy,omitempty"`
	FinalLoss     float64  `json:"final_loss,omitempty"`
}

// Prediction is one expert's probability.
type Prediction struct {
	Expert      string  `json:"expert"`
	Probability float64 `json:"probability"`
}

// Classifier is a trained router model. It is safe for concurrent use.
type Classifier struct {
	meta    Meta
	w, b    []float32 // [dim*labels] row-major, [labels]
	be      backends.Backend
	predict *Exec
	wt, bt  *tensors.Tensor // on the backend: the weight transposed [labels, dim], the bias
}

// Meta returns the model's metadata.
func (c *Classifier) Meta() Meta { return c.meta }

// Labels returns the expert names in output order.
func (c *Classifier) Labels() []string { return append([]string(nil), c.meta.Labels...) }

// Close releases the backend.
func (c *Classifier) Close() error {
	if c.be != nil {
		_ = c.wt.FinalizeAll()
		_ = c.bt.FinalizeAll()
		c.predict.Finalize()
		c.be.Finalize()
		c.be = nil
	}
	return nil
}

// words splits text into lower-case words (letters, digits, '+' and '#'),
// as the rule stage does.
func words(s string) []string {
	return strings.FieldsFunc(strings.ToLower(s), func(c rune) bool {
		return !unicode.IsLetter(c) && !unicode.IsDigit(c) && c != '+' && c != '#'
	})
}

// FNV-1a, 32 bits, written out so that hashing allocates nothing.
const (
	fnvOffset = 2166136261
	fnvPrime  = 16777619
)

func fnvString(h uint32, s string) uint32 {
	for i := 0; i < len(s); i++ {
		h = (h ^ uint32(s[i])) * fnvPrime
	}
	return h
}

func fnvKind(kind byte) uint32 {
	return fnvString(fnvOffset, string([]byte{kind, ':'}))
}

var (
	hashWord    = fnvKind('w')
	hashBigram  = fnvKind('b')
	hashTrigram = fnvKind('c')
)

// Featurize writes the L2-normalized hashed features of text into dst
// (len dim, a power of two; zeroed first): each word (FNV-1a of "w:"+word),
// each pair of adjacent words ("b:"+w1+" "+w2) and, at half weight, each
// character trigram of "^"+word+"$" ("c:"+trigram).
func Featurize(dst []float32, text string) {
	clear(dst)
	mask := uint32(len(dst) - 1)
	ws := words(text)
	for i, w := range ws {
		dst[fnvString(hashWord, w)&mask]++
		if i > 0 {
			h := fnvString(fnvString(fnvString(hashBigram, ws[i-1]), " "), w)
			dst[h&mask]++
		}
		// Trigrams of runes over "^" + w + "$".
		var r [3]string
		n := 0
		push := func(s string) {
			r[0], r[1], r[2] = r[1], r[2], s
			if n++; n >= 3 {
				dst[fnvString(fnvString(fnvString(hashTrigram, r[0]), r[1]), r[2])&mask] += 0.5
			}
		}
		push("^")
		for j := 0; j < len(w); {
			_, size := utf8.DecodeRuneInString(w[j:])
			push(w[j : j+size])
			j += size
		}
		push("$")
	}
	var sq float64
	for _, v := range dst {
		sq += float64(v) * float64(v)
	}
	if sq == 0 {
		return
	}
	inv := float32(1 / math.Sqrt(sq))
	for i := range dst {
		dst[i] *= inv
	}
}

func newBackend(name string) (b backends.Backend, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %q: %v", ErrBackend, name, r)
		}
	}()
	b, err = backends.NewWithConfig(name)
	if err != nil {
		return nil, fmt.Errorf("%w: %q: %w", ErrBackend, name, err)
	}
	return b, nil
}

// newClassifier builds the prediction graph over weights w, b.
func newClassifier(meta Meta, w, b []float32, backend string) (*Classifier, error) {
	be, err := newBackend(backend)
	if err != nil {
		return nil, err
	}
	// wt is the weight transposed, [labels, dim]: contracting both operands
	// on their last axis needs no layout change at each call.
	ex, err := NewExec(be, func(x, wt, b *Node) *Node {
		return Softmax(Add(EinsumAxes(x, wt, [][2]int{{1, 1}}, nil), InsertAxes(b, 0)), -1)
	})
	if err != nil {
		be.Finalize()
		return nil, fmt.Errorf("%w: %w", ErrBackend, err)
	}
	k, dim := len(meta.Labels), meta.Dim
	wt := make([]float32, len(w))
	for d := range dim {
		for j := range k {
			wt[j*dim+d] = w[d*k+j]
		}
	}
	return &Classifier{meta: meta, w: w, b: b, be: be, predict: ex,
		wt: tensors.FromFlatDataAndDimensions(wt, k, dim), bt: tensors.FromFlatDataAndDimensions(b, k)}, nil
}

// PredictBatch returns, for each text, the probability of each label (in
// Labels order).
func (c *Classifier) PredictBatch(texts []string) (probs [][]float32, err error) {
	if len(texts) == 0 {
		return nil, nil
	}
	dim, k := c.meta.Dim, len(c.meta.Labels)
	x := make([]float32, len(texts)*dim)
	for i, t := range texts {
		Featurize(x[i*dim:(i+1)*dim], t)
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: predict: %v", ErrBackend, r)
		}
	}()
	out, err := c.predict.Exec(tensors.FromFlatDataAndDimensions(x, len(texts), dim), c.wt, c.bt)
	if err != nil {
		return nil, fmt.Errorf("%w: predict: %w", ErrBackend, err)
	}
	flat := tensors.MustCopyFlatData[float32](out[0])
	_ = out[0].FinalizeAll()
	probs = make([][]float32, len(texts))
	for i := range probs {
		probs[i] = flat[i*k : (i+1)*k]
	}
	return probs, nil
}

// Predict returns every expert's probability for text, highest first (ties
// by name).
func (c *Classifier) Predict(text string) ([]Prediction, error) {
	probs, err := c.PredictBatch([]string{text})
	if err != nil {
		return nil, err
	}
	out := make([]Prediction, len(c.meta.Labels))
	for i, l := range c.meta.Labels {
		out[i] = Prediction{Expert: l, Probability: float64(probs[0][i])}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Probability != out[j].Probability {
			return out[i].Probability > out[j].Probability
		}
		return out[i].Expert < out[j].Expert
	})
	return out, nil
}

// Accuracy is the share of examples whose most probable label is theirs.
func (c *Classifier) Accuracy(examples []Example) (float64, error) {
	if len(examples) == 0 {
		return 0, nil
	}
	texts := make([]string, len(examples))
	for i, e := range examples {
		texts[i] = e.Prompt
	}
	probs, err := c.PredictBatch(texts)
	if err != nil {
		return 0, err
	}
	hits := 0
	for i, p := range probs {
		if c.meta.Labels[argmax(p)] == examples[i].Expert {
			hits++
		}
	}
	return float64(hits) / float64(len(examples)), nil
}

func argmax(p []float32) int {
	best := 0
	for i, v := range p {
		if v > p[best] {
			best = i
		}
	}
	return best
}

// Train fits a classifier to examples (at least two distinct experts). ctx
// is checked between steps.
func Train(ctx context.Context, examples []Example, cfg Config) (c *Classifier, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	labelIdx := map[string]int{}
	for _, e := range examples {
		labelIdx[e.Expert] = 0
	}
	if len(labelIdx) < 2 {
		return nil, fmt.Errorf("%w: %d rows with %d distinct experts: want at least two experts", ErrInvalidOption, len(examples), len(labelIdx))
	}
	labels := make([]string, 0, len(labelIdx))
	for l := range labelIdx {
		labels = append(labels, l)
	}
	sort.Strings(labels)
	for i, l := range labels {
		labelIdx[l] = i
	}
	dim, k, bs := cfg.Dim, len(labels), min(cfg.BatchSize, len(examples))

	be, err := newBackend(cfg.Backend)
	if err != nil {
		return nil, err
	}
	defer be.Finalize()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: train: %v", ErrBackend, r)
		}
	}()
	const beta1, beta2, eps = 0.9, 0.999, 1e-8
	l2 := float32(cfg.L2)
	step, err := NewExec(be, func(in []*Node) []*Node {
		w, b, mw, vw, mb, vb := in[0], in[1], in[2], in[3], in[4], in[5]
		x, y, mask, lr, bc1, bc2 := in[6], in[7], in[8], in[9], in[10], in[11]
		g := w.Graph()
		lp := LogSoftmax(Add(MatMul(x, w), InsertAxes(b, 0)), -1)
		n := Max(ReduceAllSum(mask), Scalar(g, dtypes.Float32, 1))
		nll := Div(Neg(ReduceAllSum(Mul(ReduceSum(Mul(lp, y), -1), mask))), n)
		loss := Add(nll, MulScalar(ReduceAllSum(Square(w)), float64(l2)/2))
		grads := Gradient(loss, w, b)
		out := []*Node{}
		var ms, vs []*Node
		for i, p := range []*Node{w, b} {
			m, v := []*Node{mw, mb}[i], []*Node{vw, vb}[i]
			gr := grads[i]
			m = Add(MulScalar(m, beta1), MulScalar(gr, 1-beta1))
			v = Add(MulScalar(v, beta2), MulScalar(Square(gr), 1-beta2))
			upd := Div(Div(m, bc1), AddScalar(Sqrt(Div(v, bc2)), eps))
			out = append(out, Sub(p, Mul(lr, upd)))
			ms, vs = append(ms, m), append(vs, v)
		}
		return append(out, ms[0], vs[0], ms[1], vs[1], nll)
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBackend, err)
	}
	defer step.Finalize()

	feats := make([]float32, len(examples)*dim)
	for i, e := range examples {
		Featurize(feats[i*dim:(i+1)*dim], e.Prompt)
	}
	state := []*tensors.Tensor{
		tensors.FromShape(shapes.Make(dtypes.Float32, dim, k)), tensors.FromShape(shapes.Make(dtypes.Float32, k)),
		tensors.FromShape(shapes.Make(dtypes.Float32, dim, k)), tensors.FromShape(shapes.Make(dtypes.Float32, dim, k)),
		tensors.FromShape(shapes.Make(dtypes.Float32, k)), tensors.FromShape(shapes.Make(dtypes.Float32, k)),
	}
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x1a2b3c))
	order := make([]int, len(examples))
	for i := range order {
		order[i] = i
	}
	x := make([]float32, bs*dim)
	y := make([]float32, bs*k)
	mask := make([]float32, bs)
	t := 0
	var lastLoss float64
	for epoch := 0; epoch < cfg.Epochs; epoch++ {
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		var sum float64
		batches := 0
		for off := 0; off < len(order); off += bs {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			clear(x)
			clear(y)
			clear(mask)
			for r := 0; r < bs && off+r < len(order); r++ {
				i := order[off+r]
				copy(x[r*dim:(r+1)*dim], feats[i*dim:(i+1)*dim])
				y[r*k+labelIdx[examples[i].Expert]] = 1
				mask[r] = 1
			}
			t++
			bc1 := float32(1 - math.Pow(beta1, float64(t)))
			bc2 := float32(1 - math.Pow(beta2, float64(t)))
			out, err := step.Exec(state[0], state[1], state[2], state[3], state[4], state[5],
				tensors.FromFlatDataAndDimensions(x, bs, dim), tensors.FromFlatDataAndDimensions(y, bs, k),
				tensors.FromFlatDataAndDimensions(mask, bs), float32(cfg.LearningRate), bc1, bc2)
			if err != nil {
				return nil, fmt.Errorf("%w: train step: %w", ErrBackend, err)
			}
			for i := range state {
				_ = state[i].FinalizeAll()
				state[i] = out[i]
			}
			sum += float64(tensors.ToScalar[float32](out[6]))
			_ = out[6].FinalizeAll()
			batches++
		}
		lastLoss = sum / float64(batches)
	}
	w := tensors.MustCopyFlatData[float32](state[0])
	b := tensors.MustCopyFlatData[float32](state[1])
	for _, s := range state {
		_ = s.FinalizeAll()
	}
	meta := Meta{Format: Format, Features: Features, Dim: dim, Labels: labels, TrainRows: len(examples), Epochs: cfg.Epochs, FinalLoss: lastLoss}
	c, err = newClassifier(meta, w, b, cfg.Backend)
	if err != nil {
		return nil, err
	}
	if c.meta.TrainAccuracy, err = c.Accuracy(examples); err != nil {
		_ = c.Close()
		return nil, err
	}
	return c, nil
}

// Save writes the model directory (created if needed): router.json and
// model.safetensors.
func (c *Classifier) Save(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("save router model: %w", err)
	}
	k := len(c.meta.Labels)
	ts := map[string]*checkpoint.Tensor{
		"weight": {Shape: []int{c.meta.Dim, k}, Data: c.w},
		"bias":   {Shape: []int{k}, Data: c.b},
	}
	if err := checkpoint.WriteSafetensors(filepath.Join(dir, WeightsFile), ts, map[string]string{"format": Format}); err != nil {
		return fmt.Errorf("save router model: %w", err)
	}
	data, err := json.MarshalIndent(c.meta, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, MetaFile), append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("save router model: %w", err)
	}
	return nil
}

// Load reads a model directory written by Save. backend "" reads
// GOMLX_BACKEND, else DefaultBackend.
func Load(dir, backend string) (*Classifier, error) {
	data, err := os.ReadFile(filepath.Join(dir, MetaFile))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrModelDir, dir, err)
	}
	var meta Meta
	if err := json.Unmarshal(data, &meta); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrModelDir, MetaFile, err)
	}
	if err := meta.validate(); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrModelDir, dir, err)
	}
	ts, _, err := checkpoint.ReadSafetensors(filepath.Join(dir, WeightsFile))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrModelDir, err)
	}
	k := len(meta.Labels)
	w, b := ts["weight"], ts["bias"]
	if w == nil || b == nil || len(w.Shape) != 2 || w.Shape[0] != meta.Dim || w.Shape[1] != k || len(b.Shape) != 1 || b.Shape[0] != k {
		return nil, fmt.Errorf("%w: %s: want weight [%d %d] and bias [%d]", ErrModelDir, WeightsFile, meta.Dim, k, k)
	}
	if backend == "" {
		backend = Config{}.withDefaults().Backend
	}
	return newClassifier(meta, w.Data, b.Data, backend)
}

func (m Meta) validate() error {
	switch {
	case m.Format != Format:
		return fmt.Errorf("format %q, want %q", m.Format, Format)
	case m.Features != Features:
		return fmt.Errorf("features %q, want %q", m.Features, Features)
	case m.Dim <= 0 || m.Dim > 1<<20 || m.Dim&(m.Dim-1) != 0:
		return fmt.Errorf("dim %d: want a power of two", m.Dim)
	case len(m.Labels) < 2:
		return errors.New("want at least two labels")
	}
	seen := map[string]bool{}
	for _, l := range m.Labels {
		if l == "" || seen[l] {
			return fmt.Errorf("label %q empty or repeated", l)
		}
		seen[l] = true
	}
	return nil
}
