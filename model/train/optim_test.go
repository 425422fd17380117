package train

import (
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/gomlx/gomlx/pkg/core/tensors"

	"github.com/largeforge/largeforge/model/checkpoint"
	"github.com/largeforge/largeforge/schemas"
)

// refOptimizer is one optimizer's update written out from its published
// formulas (PyTorch's AdamW and SGD, transformers' AdamW and Adafactor), in
// float64 over plain slices: the golden values the graph is held to.
type refOptimizer struct {
	name                string
	momentum, dampening float64
	nesterov            bool
	m, v, row, col, buf [][]float64
	step                int
}

func (r *refOptimizer) update(i int, p, g []float64, dims []int, lr, wd float64) {
	if r.m == nil {
		r.m, r.v, r.row, r.col, r.buf = make([][]float64, 64), make([][]float64, 64), make([][]float64, 64), make([][]float64, 64), make([][]float64, 64)
	}
	t := float64(r.step)
	switch r.name {
	case "adamw_torch", "adamw_hf":
		if r.m[i] == nil {
			r.m[i], r.v[i] = make([]float64, len(p)), make([]float64, len(p))
		}
		bc1, bc2 := 1-math.Pow(0.9, t), 1-math.Pow(0.999, t)
		for j := range p {
			r.m[i][j] = 0.9*r.m[i][j] + 0.1*g[j]
			r.v[i][j] = 0.999*r.v[i][j] + 0.001*g[j]*g[j]
			if r.name == "adamw_torch" {
				p[j] *= 1 - lr*wd
				p[j] -= lr * (r.m[i][j] / bc1) / (math.Sqrt(r.v[i][j]/bc2) + 1e-8)
			} else {
				p[j] -= lr * math.Sqrt(bc2) / bc1 * r.m[i][j] / (math.Sqrt(r.v[i][j]) + 1e-8)
				p[j] -= lr * wd * p[j]
			}
		}
	case "sgd":
		if r.buf[i] == nil {
			r.buf[i] = make([]float64, len(p))
		}
		for j := range p {
			d := g[j] + wd*p[j]
			if r.momentum > 0 {
				if r.step == 1 {
					r.buf[i][j] = d
				} else {
					r.buf[i][j] = r.momentum*r.buf[i][j] + (1-r.dampening)*d
				}
				if r.nesterov {
					d += r.momentum * r.buf[i][j]
				} else {
					d = r.buf[i][j]
				}
			}
			p[j] -= lr * d
		}
	case "adafactor":
		beta2t := 1 - math.Pow(t, -0.8)
		u := make([]float64, len(p))
		if len(dims) == 2 {
			rows, cols := dims[0], dims[1]
			if r.row[i] == nil {
				r.row[i], r.col[i] = make([]float64, rows), make([]float64, cols)
			}
			rowMean, colMean := make([]float64, rows), make([]float64, cols)
			for a := range rows {
				for b := range cols {
					sq := g[a*cols+b]*g[a*cols+b] + 1e-30
					rowMean[a] += sq / float64(cols)
					colMean[b] += sq / float64(rows)
				}
			}
			mean := 0.0
			for a := range rows {
				r.row[i][a] = beta2t*r.row[i][a] + (1-beta2t)*rowMean[a]
				mean += r.row[i][a] / float64(rows)
			}
			for b := range cols {
				r.col[i][b] = beta2t*r.col[i][b] + (1-beta2t)*colMean[b]
			}
			for a := range rows {
				for b := range cols {
					u[a*cols+b] = g[a*cols+b] / math.Sqrt(r.row[i][a]/mean) / math.Sqrt(r.col[i][b])
				}
			}
		} else {
			if r.v[i] == nil {
				r.v[i] = make([]float64, len(p))
			}
			for j := range p {
				r.v[i][j] = beta2t*r.v[i][j] + (1-beta2t)*(g[j]*g[j]+1e-30)
				u[j] = g[j] / math.Sqrt(r.v[i][j])
			}
		}
		rms := 0.0
		for _, x := range u {
			rms += x * x / float64(len(u))
		}
		div := math.Max(math.Sqrt(rms)/1.0, 1)
		for j := range p {
			p[j] -= wd * lr * p[j]
			p[j] -= lr * u[j] / div
		}
	}
}

// optimTrainer is a Trainer with optim and optim_args, weight decay 0.1
// and no clipping (on engine, the default when none); it is closed when
// the test ends.
func optimTrainer(t *testing.T, ck *checkpoint.Checkpoint, optim, args string, engine ...string) (*Trainer, schemas.TrainingConfig) {
	t.Helper()
	cfg := testConfig("")
	cfg.Optim, cfg.OptimArgs, cfg.WeightDecay, cfg.MaxGradNorm = optim, args, 0.1, 0
	opts := []Option{WithMaxSeqLen(32)}
	for _, e := range engine {
		opts = append(opts, WithEngine(e))
	}
	tr, err := New(cfg, ck, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr, cfg
}

// applyOn takes the optimizer step from the summed gradients acc on the
// trainer's engine: the graph (apply) or the native step (applyHost).
func applyOn(t *testing.T, tr *Trainer, acc []*tensors.Tensor, wSum, lr float64) float64 {
	t.Helper()
	if tr.native == nil {
		norm, err := tr.apply(acc, wSum, lr)
		if err != nil {
			t.Fatal(err)
		}
		return norm
	}
	var vals [3][][]float32
	for k, ts := range [][]*tensors.Tensor{tr.params, tr.mom, tr.vel} {
		v, err := hostValues(ts, true)
		if err != nil {
			t.Fatal(err)
		}
		vals[k] = v
	}
	grads, err := hostValues(acc, false)
	if err != nil {
		t.Fatal(err)
	}
	return tr.applyHost(vals[0], vals[1], vals[2], grads, wSum, lr)
}

func floats(t *testing.T, x *tensors.Tensor) []float64 {
	t.Helper()
	v, err := tensors.CopyFlatData[float32](x)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]float64, len(v))
	for i, f := range v {
		out[i] = float64(f)
	}
	return out
}

// TestOptimizersMatchFormulas takes three optimizer steps with each optim
// on the tiny model and holds two tensors (a matrix and a norm vector, with
// and without weight decay) to the reference updates.
func TestOptimizersMatchFormulas(t *testing.T) {
	_, ck, tok := tinyBase(t)
	exs := shortTask(t, tok, 4)
	tests := []struct {
		optim, args string
		ref         refOptimizer
	}{
		{optim: "adamw_torch", ref: refOptimizer{name: "adamw_torch"}},
		{optim: "adamw_torch_fused", ref: refOptimizer{name: "adamw_torch"}},
		{optim: "adamw_hf", ref: refOptimizer{name: "adamw_hf"}},
		{optim: "sgd", ref: refOptimizer{name: "sgd"}},
		{optim: "sgd", args: "momentum=0.9,dampening=0.1", ref: refOptimizer{name: "sgd", momentum: 0.9, dampening: 0.1}},
		{optim: "sgd", args: "momentum=0.9,nesterov=true", ref: refOptimizer{name: "sgd", momentum: 0.9, nesterov: true}},
		{optim: "adafactor", ref: refOptimizer{name: "adafactor"}},
	}
	for _, engine := range []string{schemas.TrainEngineGraph, schemas.TrainEngineNative} {
		for _, tc := range tests {
			t.Run(engine+" "+tc.optim+" "+tc.args, func(t *testing.T) {
				optimFollowsFormula(t, ck, exs, engine, tc.optim, tc.args, tc.ref)
			})
		}
	}
}

// optimFollowsFormula takes three steps of optim on engine and holds the
// watched tensors to ref's updates of the same gradients.
func optimFollowsFormula(t *testing.T, ck *checkpoint.Checkpoint, exs []Example, engine, optim, args string, ref refOptimizer) {
	tr, cfg := optimTrainer(t, ck, optim, args, engine)
	watch := map[int][]float64{}
	for i, n := range tr.names {
		if n == "model.layers.0.self_attn.q_proj.weight" || n == "model.layers.0.input_layernorm.weight" {
			watch[i] = floats(t, tr.params[i])
		}
	}
	if len(watch) != 2 {
		t.Fatalf("watched tensors not found in %v", tr.names)
	}
	lr := 1e-2
	for step := 1; step <= 3; step++ {
		acc, _, wSum, err := tr.microStep(tr.makeBatch(exs, len(exs)), nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		grads := map[int][]float64{}
		for i := range watch {
			grads[i] = floats(t, acc[i])
			for j := range grads[i] {
				grads[i][j] /= math.Max(wSum, 1)
			}
		}
		applyOn(t, tr, acc, wSum, lr)
		ref.step = step
		for i, p := range watch {
			wd := 0.0
			if tr.decay[i] {
				wd = cfg.WeightDecay
			}
			ref.update(i, p, grads[i], tr.params[i].Shape().Dimensions, lr, wd)
			got := floats(t, tr.params[i])
			for j := range p {
				if math.Abs(got[j]-p[j]) > 2e-5+1e-4*math.Abs(p[j]) {
					t.Fatalf("step %d %s[%d] = %.8g, formula %.8g", step, tr.names[i], j, got[j], p[j])
				}
			}
		}
	}
}

// TestNativeOptimizerMatchesGraph takes three steps of every optimizer,
// clipped and with weight decay, from the same summed gradients on both
// engines: the native step (applyHost) leaves every parameter and state
// equal to the graph's (optimizerNodes) within float32 rounding, and
// reports the same gradient norm.
func TestNativeOptimizerMatchesGraph(t *testing.T) {
	_, ck, tok := tinyBase(t)
	exs := shortTask(t, tok, 4)
	for _, tc := range []struct{ optim, args string }{
		{"adamw_torch", ""}, {"adamw_hf", ""}, {"sgd", ""}, {"sgd", "momentum=0.9,dampening=0.1"},
		{"sgd", "momentum=0.9,nesterov=true"}, {"adafactor", ""},
	} {
		t.Run(tc.optim+" "+tc.args, func(t *testing.T) {
			var trs [2]*Trainer
			for k, engine := range []string{schemas.TrainEngineGraph, schemas.TrainEngineNative} {
				trs[k], _ = optimTrainer(t, ck, tc.optim, tc.args, engine)
				trs[k].cfg.MaxGradNorm = 0.5
			}
			for step := 1; step <= 3; step++ {
				acc, _, wSum, err := trs[0].microStep(trs[0].makeBatch(exs, len(exs)), nil, 0)
				if err != nil {
					t.Fatal(err)
				}
				copies := make([]*tensors.Tensor, len(acc))
				for i, a := range acc {
					copies[i] = tensors.FromFlatDataAndDimensions(floats32(t, a), a.Shape().Dimensions...)
				}
				gNorm, nNorm := applyOn(t, trs[0], acc, wSum, 1e-2), applyOn(t, trs[1], copies, wSum, 1e-2)
				if math.Abs(gNorm-nNorm) > 1e-5*gNorm {
					t.Fatalf("step %d: gradient norm native %v, graph %v", step, nNorm, gNorm)
				}
				for _, part := range []struct {
					name string
					g, n []*tensors.Tensor
				}{{"parameter", trs[0].params, trs[1].params}, {"state m", trs[0].mom, trs[1].mom}, {"state v", trs[0].vel, trs[1].vel}} {
					for i := range part.g {
						want, got := floats32(t, part.g[i]), floats32(t, part.n[i])
						for j := range want {
							if d := math.Abs(float64(got[j] - want[j])); d > 1e-7+2e-6*math.Abs(float64(want[j])) {
								t.Fatalf("step %d %s %s[%d]: native %.9g, graph %.9g", step, part.name, trs[0].names[i], j, got[j], want[j])
							}
						}
					}
				}
				if trs[0].step != step || trs[1].step != step {
					t.Fatalf("steps graph %d, native %d, want %d", trs[0].step, trs[1].step, step)
				}
			}
		})
	}
}

func floats32(t *testing.T, x *tensors.Tensor) []float32 {
	t.Helper()
	v, err := tensors.CopyFlatData[float32](x)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestOptimizersMatchPyTorch runs the same steps through PyTorch's AdamW
// and SGD where python3 with torch is installed (Debian's python3-torch).
func TestOptimizersMatchPyTorch(t *testing.T) {
	if testing.Short() {
		t.Skip("runs PyTorch (make test runs it)")
	}
	python := torchPython()
	if python == "" {
		if os.Getenv("LARGEFORGE_REQUIRE_TORCH") == "1" {
			t.Fatal("no python3 with torch, and LARGEFORGE_REQUIRE_TORCH=1 (.ci/run installs Debian's python3-torch)")
		}
		t.Skip("python3 with torch (Debian's python3-torch) is not installed: the PyTorch comparison is skipped")
	}
	_, ck, tok := tinyBase(t)
	exs := shortTask(t, tok, 4)
	for _, tc := range []struct{ optim, args, torch string }{
		{"adamw_torch", "", "torch.optim.AdamW([p], lr=lr, weight_decay=wd, eps=1e-8)"},
		{"sgd", "momentum=0.9", "torch.optim.SGD([p], lr=lr, weight_decay=wd, momentum=0.9)"},
	} {
		t.Run(tc.optim, func(t *testing.T) {
			tr, _ := optimTrainer(t, ck, tc.optim, tc.args)
			i := 0
			for k, n := range tr.names {
				if n == "model.layers.0.self_attn.q_proj.weight" {
					i = k
				}
			}
			rec := map[string]any{"p0": floats(t, tr.params[i]), "lr": 1e-2, "wd": 0.1}
			var grads [][]float64
			for range 3 {
				acc, _, wSum, err := tr.microStep(tr.makeBatch(exs, len(exs)), nil, 0)
				if err != nil {
					t.Fatal(err)
				}
				g := floats(t, acc[i])
				for j := range g {
					g[j] /= math.Max(wSum, 1)
				}
				grads = append(grads, g)
				if _, err := tr.apply(acc, wSum, 1e-2); err != nil {
					t.Fatal(err)
				}
			}
			rec["grads"] = grads
			data, _ := json.Marshal(rec)
			in := filepath.Join(t.TempDir(), "steps.json")
			if err := os.WriteFile(in, data, 0o644); err != nil {
				t.Fatal(err)
			}
			script := "import json,sys,torch\nd=json.load(open(sys.argv[1]))\nlr,wd=d['lr'],d['wd']\n" +
				"p=torch.nn.Parameter(torch.tensor(d['p0'],dtype=torch.float64))\nopt=" + tc.torch + "\n" +
				"for g in d['grads']:\n  p.grad=torch.tensor(g,dtype=torch.float64)\n  opt.step()\nprint(json.dumps(p.detach().tolist()))\n"
			out, err := exec.Command(python, "-c", script, in).Output()
			if err != nil {
				t.Fatalf("python3: %v", err)
			}
			var want []float64
			if err := json.Unmarshal(out, &want); err != nil {
				t.Fatal(err)
			}
			got := floats(t, tr.params[i])
			for j := range want {
				if math.Abs(got[j]-want[j]) > 2e-5+1e-4*math.Abs(want[j]) {
					t.Fatalf("%s[%d] = %.8g, PyTorch %.8g", tr.names[i], j, got[j], want[j])
				}
			}
		})
	}
}

// torchPython returns a python3 that imports torch: Debian's (where
// python3-torch installs it), else the one on the PATH; "" when neither.
func torchPython() string {
	for _, p := range []string{"/usr/bin/python3", "python3"} {
		if exec.Command(p, "-c", "import torch").Run() == nil {
			return p
		}
	}
	return ""
}
