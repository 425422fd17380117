package train

import (
	"context"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gomlx/gomlx/pkg/core/tensors"

	"github.com/largeforge/largeforge/internal/testenv"
	"github.com/largeforge/largeforge/model"
	"github.com/largeforge/largeforge/model/checkpoint"
	"github.com/largeforge/largeforge/model/tokenizer"
	"github.com/largeforge/largeforge/schemas"
)

// nativeGrads runs the native engine's forward and backward pass on b
// with the weights of ck, and returns the summed loss, the summed weight
// and the gradients of the summed loss by tensor name.
func nativeGrads(t *testing.T, ck *checkpoint.Checkpoint, maxLen int, b Batch) (lossSum, wSum float64, grads map[string][]float32) {
	t.Helper()
	e, err := model.NewTrainEngine(ck.Config, maxLen)
	if err != nil {
		t.Fatal(err)
	}
	w, err := checkpoint.Bind(ck.Config, func(w checkpoint.Weight) ([]float32, error) { return ck.Tensors[w.Name].Data, nil })
	if err != nil {
		t.Fatal(err)
	}
	grads = map[string][]float32{}
	g, err := checkpoint.Bind(ck.Config, func(w checkpoint.Weight) ([]float32, error) {
		grads[w.Name] = make([]float32, len(ck.Tensors[w.Name].Data))
		return grads[w.Name], nil
	})
	if err != nil {
		t.Fatal(err)
	}
	p, err := e.Forward(context.Background(), w, model.TrainBatch{Rows: b.Rows, Len: b.Len, Tokens: b.Tokens, Targets: b.Targets, Weights: b.Weights})
	if err != nil {
		t.Fatal(err)
	}
	lossSum, wSum, _ = p.Loss()
	seed := make([]float32, len(b.Weights))
	for i, v := range b.Weights {
		seed[i] = -v
	}
	if err := p.Backward(context.Background(), seed, g); err != nil {
		t.Fatal(err)
	}
	return lossSum, wSum, grads
}

// TestNativeEngineMatchesGraph holds the native engine's loss (1e-5
// relative) and per-tensor gradients (‖g − g_ref‖/‖g_ref‖ ≤ 1e-4) to the
// graph engine's on one micro-batch: padded and packed rows of the tiny
// model, and stories260K.
func TestNativeEngineMatchesGraph(t *testing.T) {
	tests := []struct {
		name   string
		load   func(t *testing.T) (*checkpoint.Checkpoint, *tokenizer.Tokenizer)
		packed bool
		alpaca bool // Alpaca prompts (too long for byte tokens), else short questions
	}{
		{name: "tiny padded", load: loadTiny},
		{name: "tiny packed", load: loadTiny, packed: true},
		{name: "stories260K padded", load: loadStories, alpaca: true},
		{name: "stories260K packed", load: loadStories, packed: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ck, tok := tt.load(t)
			tr, err := New(testConfig(t.TempDir()), ck, WithMaxSeqLen(128))
			if err != nil {
				t.Fatal(err)
			}
			defer tr.Close()
			exs := shortTask(t, tok, 12)
			if tt.alpaca {
				exs = render(t, tok, syntheticTask(12), 128)
			}
			if tt.packed {
				exs = PackExamples(exs, 128)
			}
			b := tr.makeBatch(exs[:min(4, len(exs))], 4)
			acc, refLoss, refW, err := tr.microStep(b, nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			loss, wSum, grads := nativeGrads(t, ck, tr.MaxSeqLen(), b)
			if refW == 0 || wSum != refW || math.Abs(loss-refLoss) > 1e-5*math.Abs(refLoss) {
				t.Fatalf("loss %v over weight %v, graph engine %v over %v", loss, wSum, refLoss, refW)
			}
			var worst float64
			for i, n := range tr.names {
				ref, err := tensors.CopyFlatData[float32](acc[i])
				if err != nil {
					t.Fatal(err)
				}
				d, r := diffNorm(grads[n], ref)
				worst = max(worst, d/r)
				if d > 1e-4*r && d > 1e-6 {
					t.Errorf("%s: ‖g − g_ref‖ = %.3g, ‖g_ref‖ = %.3g", n, d, r)
				}
			}
			t.Logf("loss %.6g (graph %.6g), worst relative gradient difference %.2g over %d tensors", loss, refLoss, worst, len(tr.names))
		})
	}
}

func loadTiny(t *testing.T) (*checkpoint.Checkpoint, *tokenizer.Tokenizer) {
	t.Helper()
	_, ck, tok := tinyBase(t)
	return ck, tok
}

func loadStories(t *testing.T) (*checkpoint.Checkpoint, *tokenizer.Tokenizer) {
	t.Helper()
	return loadBase(t, filepath.Dir(testenv.SharedFile(t, "models/stories260K/model.safetensors")))
}

// diffNorm returns ‖a − b‖ and ‖b‖.
func diffNorm(a, b []float32) (d, r float64) {
	for i := range b {
		x := float64(a[i]) - float64(b[i])
		d += x * x
		r += float64(b[i]) * float64(b[i])
	}
	return math.Sqrt(d), math.Sqrt(r)
}

// TestNativeSFTFollowsGraph trains the tiny model 50 optimizer steps (two
// micro-batches a step, clipped) on each engine: the step losses agree
// within 1e-3, and so do the evaluations.
func TestNativeSFTFollowsGraph(t *testing.T) {
	if testing.Short() {
		t.Skip("trains twice")
	}
	_, ck, tok := tinyBase(t)
	exs := shortTask(t, tok, 400)
	losses := map[string][]float64{}
	evals := map[string]EvalResult{}
	for _, engine := range []string{schemas.TrainEngineGraph, schemas.TrainEngineNative} {
		cfg := testConfig("")
		cfg.PerDeviceBatchSize, cfg.GradientAccumulationSteps, cfg.NumEpochs = 4, 2, 1
		cfg.LearningRate, cfg.MaxGradNorm, cfg.LoggingSteps = 3e-3, 0.5, 1
		tr, err := New(cfg, ck, WithEngine(engine), WithMaxSeqLen(32))
		if err != nil {
			t.Fatal(err)
		}
		if tr.engine != engine {
			t.Fatalf("engine %s, asked for %s", tr.engine, engine)
		}
		if _, err := tr.Train(context.Background(), exs); err != nil {
			t.Fatal(err)
		}
		for _, h := range tr.history {
			if l, ok := h["loss"].(float64); ok {
				losses[engine] = append(losses[engine], l)
			}
		}
		if evals[engine], err = tr.Evaluate(context.Background(), exs[:20]); err != nil {
			t.Fatal(err)
		}
		tr.Close()
	}
	stepLossesFollow(t, losses[schemas.TrainEngineGraph], losses[schemas.TrainEngineNative], 0.5)
	ge, ne := evals[schemas.TrainEngineGraph], evals[schemas.TrainEngineNative]
	if math.Abs(ge.Loss-ne.Loss) > 1e-3 || ge.Tokens != ne.Tokens || math.Abs(ge.Accuracy-ne.Accuracy) > 0.02 {
		t.Fatalf("evaluation native %+v, graph %+v", ne, ge)
	}
}

// stepLossesFollow holds 50 native step losses n to the graph's g within
// 1e-3, and the run to a drop of at least learn.
func stepLossesFollow(t *testing.T, g, n []float64, learn float64) {
	t.Helper()
	if len(g) != 50 || len(n) != 50 {
		t.Fatalf("%d graph and %d native step losses, want 50", len(g), len(n))
	}
	for i := range g {
		if math.Abs(g[i]-n[i]) > 1e-3 {
			t.Fatalf("step %d: native loss %v, graph %v", i+1, n[i], g[i])
		}
	}
	if g[49] > g[0]-learn {
		t.Fatalf("loss %v -> %v: the run did not learn", g[0], g[49])
	}
	t.Logf("step losses %v -> %v (native %v -> %v)", g[0], g[49], n[0], n[49])
}

func TestEngineChoice(t *testing.T) {
	_, ck, _ := tinyBase(t)
	lora := schemas.DefaultLoraConfig()
	tests := []struct {
		name    string
		opts    []Option
		want    string
		wantErr error
	}{
		{name: "default on the pure Go backend", want: schemas.TrainEngineNative},
		{name: "graph asked for", opts: []Option{WithEngine(schemas.TrainEngineGraph)}, want: schemas.TrainEngineGraph},
		{name: "LoRA defaults to native", opts: []Option{WithLoRA(lora)}, want: schemas.TrainEngineNative},
		{name: "LoRA on graph", opts: []Option{WithLoRA(lora), WithEngine(schemas.TrainEngineGraph)}, want: schemas.TrainEngineGraph},
		{name: "unknown engine", opts: []Option{WithEngine("tpu")}, wantErr: ErrInvalidOption},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, err := New(testConfig(""), ck, tt.opts...)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), "engine") {
					t.Fatalf("New: %v, want %v naming engine", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer tr.Close()
			if tr.engine != tt.want {
				t.Fatalf("engine %s, want %s", tr.engine, tt.want)
			}
		})
	}
}

// loraPair is the same LoRA run on both engines (graph first), with every
// lora_B set to the same random values (B starts at zero, which would
// leave A's gradient zero).
func loraPair(t *testing.T, ck *checkpoint.Checkpoint, cfg schemas.TrainingConfig, lc schemas.LoraConfig) [2]*Trainer {
	t.Helper()
	var trs [2]*Trainer
	for k, engine := range []string{schemas.TrainEngineGraph, schemas.TrainEngineNative} {
		tr, err := New(cfg, ck, WithEngine(engine), WithLoRA(lc), WithMaxSeqLen(32))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tr.Close() })
		for i, n := range tr.names {
			if !strings.HasSuffix(n, "lora_B.weight") {
				continue
			}
			if err := tensors.MutableFlatData(tr.params[i], func(f []float32) {
				for j := range f {
					f[j] = float32((i*7+j*13)%17-8) * 1e-3
				}
			}); err != nil {
				t.Fatal(err)
			}
		}
		trs[k] = tr
	}
	return trs
}

// TestNativeLoRAMatchesGraph holds the native engine's LoRA gradients
// (adapters and trained biases; ‖g − g_ref‖/‖g_ref‖ ≤ 1e-4) and loss to the
// graph engine's on two micro-batches (the second with its own dropout
// mask) of the tiny model with attention biases, for each bias mode, with
// and without lora_dropout, adapting attention or MLP projections; the
// frozen base gets no optimizer state.
func TestNativeLoRAMatchesGraph(t *testing.T) {
	dir, ck := biasBase(t)
	_, tok := loadBase(t, dir)
	exs := shortTask(t, tok, 8)
	tests := []struct {
		bias    string
		dropout float64
		targets []string
	}{
		{schemas.LoraBiasNone, 0, []string{"q_proj", "k_proj", "v_proj", "o_proj"}},
		{schemas.LoraBiasNone, 0.1, []string{"q_proj", "k_proj", "v_proj", "o_proj"}},
		{schemas.LoraBiasAll, 0.1, []string{"q_proj", "v_proj"}},
		{schemas.LoraBiasLoraOnly, 0, []string{"q_proj", "o_proj", "gate_proj", "down_proj"}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s dropout %v %v", tt.bias, tt.dropout, tt.targets), func(t *testing.T) {
			lc := schemas.DefaultLoraConfig()
			lc.Bias, lc.LoraDropout, lc.TargetModules = tt.bias, tt.dropout, tt.targets
			trs := loraPair(t, ck, testConfig(""), lc)
			g, n := trs[0], trs[1]
			if len(n.names) != len(g.names) || n.NumParameters() != g.NumParameters() || len(n.mom) != len(n.names) || len(n.native.acc) != len(n.names) {
				t.Fatalf("native trains %d tensors (%d values, %d states, %d gradients), graph %d (%d values)",
					len(n.names), n.NumParameters(), len(n.mom), len(n.native.acc), len(g.names), g.NumParameters())
			}
			for _, name := range n.names {
				if !strings.HasPrefix(name, "base_model.model.") {
					t.Fatalf("base tensor %s trained", name)
				}
			}
			bs := []Batch{n.makeBatch(exs[:4], 4), n.makeBatch(exs[4:], 4)}
			var acc []*tensors.Tensor
			var refLoss float64
			for micro, b := range bs {
				out, l, _, err := g.microStep(b, acc, micro)
				if err != nil {
					t.Fatal(err)
				}
				acc, refLoss = out, refLoss+l
			}
			loss, _, _, err := n.nativeAccumulate(context.Background(), bs)
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(loss-refLoss) > 1e-5*math.Abs(refLoss) {
				t.Fatalf("loss %v, graph %v", loss, refLoss)
			}
			var worst float64
			for i, name := range g.names {
				ref, err := tensors.CopyFlatData[float32](acc[i])
				if err != nil {
					t.Fatal(err)
				}
				d, r := diffNorm(n.native.acc[i], ref)
				worst = max(worst, d/r)
				if d > 1e-4*r && d > 1e-6 {
					t.Errorf("%s: ‖g − g_ref‖ = %.3g, ‖g_ref‖ = %.3g", name, d, r)
				}
			}
			t.Logf("%d trained tensors, worst relative gradient difference %.2g", len(g.names), worst)
		})
	}
}

// TestNativeLoRAFollowsGraph trains LoRA adapters (the default config:
// r 8 on q, k, v, o with lora_dropout) on the tiny model 50 optimizer steps
// on each engine: the step losses agree within 1e-3.
func TestNativeLoRAFollowsGraph(t *testing.T) {
	if testing.Short() {
		t.Skip("trains twice")
	}
	_, ck, tok := tinyBase(t)
	exs := shortTask(t, tok, 400)
	cfg := testConfig("")
	cfg.PerDeviceBatchSize, cfg.GradientAccumulationSteps, cfg.NumEpochs = 4, 2, 1
	cfg.LearningRate, cfg.MaxGradNorm, cfg.LoggingSteps = 1e-2, 1, 1
	var losses [2][]float64
	for k, tr := range loraPair(t, ck, cfg, schemas.DefaultLoraConfig()) {
		if _, err := tr.Train(context.Background(), exs); err != nil {
			t.Fatal(err)
		}
		for _, h := range tr.history {
			if l, ok := h["loss"].(float64); ok {
				losses[k] = append(losses[k], l)
			}
		}
	}
	stepLossesFollow(t, losses[0], losses[1], 0.3)
}
