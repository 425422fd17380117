package train

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gomlx/gomlx/backends"
	"github.com/gomlx/gomlx/pkg/core/dtypes"
	. "github.com/gomlx/gomlx/pkg/core/graph" //nolint:revive,staticcheck // the GoMLX convention for graph code
	"github.com/gomlx/gomlx/pkg/core/shapes"
	"github.com/gomlx/gomlx/pkg/core/tensors"

	"github.com/largeforge/largeforge/internal/benchenv"
	"github.com/largeforge/largeforge/internal/testenv"
	"github.com/largeforge/largeforge/model"
	"github.com/largeforge/largeforge/model/checkpoint"
	"github.com/largeforge/largeforge/schemas"
)

// Training benchmarks print tokens/s, the GFLOP/s they achieve and, beside
// them, the large-matmul GFLOP/s of what the engine computes with (the
// native kernels' 1024³ rate for the native engine, the backend's for the
// graph one) measured in the same run right after each timing (the
// machine's load varies), the process's peak RSS, the CPU and thread
// count, and PyTorch's figure on the same shapes and threads
// (testdata/peer_train.py, Debian's python3-torch; said so when it is not
// installed). Run with `make bench` (-benchtime 1x: one timed optimizer
// step after a compiling one).
//
// Achieved GFLOP/s counts the products with weights only (attention
// scores and element-wise work are left out, as in the usual 6·N·T):
//   - full training: 6·N·T, N the parameters of the linear layers and the
//     LM head (the input embedding is a lookup and counts only when tied);
//   - LoRA: (4·N + 6·N_adapter)·T: the forward (2·N·T) and the gradient
//     through the frozen weights to the activations (2·N·T), but no
//     gradient of the frozen weights; the adapters train in full.

const (
	benchRows = 4
	benchSeq  = 256
)

// matmulGFLOPs measures be's float32 rate on a 1024³ product.
func matmulGFLOPs(b *testing.B, be backends.Backend) float64 {
	b.Helper()
	const n = 1024
	x := make([]float32, n*n)
	for i := range x {
		x[i] = float32(i%7) * 0.01
	}
	lhs := tensors.FromFlatDataAndDimensions(x, n, n)
	defer func() { _ = lhs.FinalizeAll() }()
	g := NewGraph(be, "matmul")
	defer g.Finalize()
	l := Parameter(g, "lhs", shapes.Make(dtypes.Float32, n, n))
	r := Parameter(g, "rhs", shapes.Make(dtypes.Float32, n, n))
	g.Compile(DotGeneral(l, []int{1}, nil, r, []int{0}, nil))
	_ = g.Run(lhs, lhs)[0].FinalizeAll() // warm up
	const reps = 3
	start := time.Now()
	for range reps {
		_ = g.Run(lhs, lhs)[0].FinalizeAll()
	}
	return 2 * n * n * n * reps / time.Since(start).Seconds() / 1e9
}

// benchCheckpoint loads stories260K from /work/shared or initialises the
// 15m preset in a temporary directory.
func benchCheckpoint(b *testing.B, name string) *checkpoint.Checkpoint {
	b.Helper()
	dir := ""
	switch name {
	case "stories260K":
		dir = filepath.Dir(testenv.SharedFile(b, "models/stories260K/config.json"))
	default:
		dir = filepath.Join(b.TempDir(), name)
		if err := checkpoint.Init(name, 1, dir); err != nil {
			b.Fatal(err)
		}
	}
	ck, err := checkpoint.Load(dir)
	if err != nil {
		b.Fatal(err)
	}
	return ck
}

// matmulParams counts the weights of products: every 2-D weight but the
// input embedding (unless it is tied to the LM head).
func matmulParams(c checkpoint.Config) int {
	n := 0
	for name, shape := range checkpoint.ExpectedTensors(c) {
		if len(shape) != 2 || (name == "model.embed_tokens.weight" && !c.TieWordEmbeddings) {
			continue
		}
		n += shape[0] * shape[1]
	}
	return n
}

// benchTrain times optimizer steps of benchRows rows of benchSeq tokens
// (full or LoRA) and reports tokens/s and GFLOP/s beside the matmul rate.
func benchTrain(b *testing.B, name string, lora bool, opts ...Option) {
	debug.FreeOSMemory()                                      // what earlier benchmarks left
	_ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) // the peak RSS from here on
	ck := benchCheckpoint(b, name)
	cfg := schemas.DefaultTrainingConfig()
	cfg.ModelName, cfg.BF16 = name, false
	cfg.GradientAccumulationSteps, cfg.NumEpochs, cfg.LearningRate = 1, 1, 1e-3
	if lora {
		opts = append(opts, WithLoRA(schemas.DefaultLoraConfig()))
	}
	tr, err := New(cfg, ck, append(opts, WithMaxSeqLen(benchSeq))...)
	if err != nil {
		b.Fatal(err)
	}
	defer tr.Close()
	exs := make([]Example, benchRows)
	for i := range exs {
		exs[i] = Example{Tokens: make([]int32, benchSeq), Weights: make([]float32, benchSeq)}
		for j := range exs[i].Tokens {
			exs[i].Tokens[j] = int32((i*131 + j*7) % min(256, ck.Config.VocabSize))
			exs[i].Weights[j] = 1
		}
	}
	batch := tr.makeBatch(exs, benchRows)
	step := func() {
		var err error
		if tr.native != nil {
			_, _, err = tr.nativeStep(context.Background(), []Batch{batch}, 1e-3)
		} else {
			_, _, _, err = tr.trainStep(batch, nil, 0, 1e-3, 0)
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	step() // compile
	b.ResetTimer()
	for range b.N {
		step()
	}
	elapsed := b.Elapsed().Seconds()
	b.StopTimer()
	tokS := float64(b.N*benchRows*benchSeq) / elapsed
	n := float64(matmulParams(ck.Config))
	flopsPerToken, formula := 6*n, "6·N·T"
	if lora {
		flopsPerToken, formula = 4*n+6*float64(tr.NumParameters()), "(4·N+6·N_adapter)·T"
	}
	gf := flopsPerToken * tokS / 1e9
	rate, rateOf := 0.0, "the native kernels'"
	if tr.native != nil {
		rate = model.KernelGFLOPs(1024, 3)
	} else {
		rate, rateOf = matmulGFLOPs(b, tr.be), "the backend's"
	}
	rss := peakRSSMiB()
	b.ReportMetric(tokS, "tokens/s")
	b.ReportMetric(gf, "GFLOP/s")
	b.ReportMetric(rate, "matmul-GFLOP/s")
	b.ReportMetric(rss, "peak-RSS-MiB")
	kind := "full"
	if lora {
		kind = "LoRA"
	}
	b.Logf("%s %s training on the %s engine, %dx%d tokens/step, %s: %.0f tokens/s, %.2f GFLOP/s (%s, N=%.0f) = %.0f%% of %s matmul 1024^3 %.2f GFLOP/s; peak RSS %.0f MiB",
		name, kind, tr.engine, benchRows, benchSeq, benchenv.Machine(), tokS, gf, formula, n, 100*gf/rate, rateOf, rate, rss)
	if tr.native != nil || tr.opts.engine == "" { // the graph engine run beside the native one needs no second peer
		b.Log(peerTrain(b, ck.Config, lora))
	}
}

// peakRSSMiB is the process's peak resident set (VmHWM) in MiB, since
// benchTrain reset it.
func peakRSSMiB() float64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}

// peerTrain runs testdata/peer_train.py (PyTorch) on cfg's shape at
// benchRows x benchSeq with GOMAXPROCS threads, full or LoRA as DefaultLoraConfig
// (r, alpha 2r, on q, k, v, o), and describes its figure; without torch it
// says so. LF_BENCH_PEER_STEPS sets its timed steps (3).
func peerTrain(b *testing.B, cfg checkpoint.Config, lora bool) string {
	b.Helper()
	python := torchPython()
	if python == "" {
		return "PyTorch peer: not run, no python3 with torch (Debian's python3-torch) installed"
	}
	steps := benchenv.Int("LF_BENCH_PEER_STEPS", 3)
	tied := 0
	if cfg.TieWordEmbeddings {
		tied = 1
	}
	args := []string{"testdata/peer_train.py", "--threads", strconv.Itoa(runtime.GOMAXPROCS(0)),
		"--rows", strconv.Itoa(benchRows), "--seq", strconv.Itoa(benchSeq), "--steps", strconv.Itoa(steps),
		"--vocab", strconv.Itoa(cfg.VocabSize), "--hidden", strconv.Itoa(cfg.HiddenSize),
		"--inter", strconv.Itoa(cfg.IntermediateSize), "--layers", strconv.Itoa(cfg.NumLayers),
		"--heads", strconv.Itoa(cfg.NumHeads), "--kv-heads", strconv.Itoa(cfg.NumKVHeads),
		"--head-dim", strconv.Itoa(cfg.HeadDim), "--tied", strconv.Itoa(tied),
		"--eps", strconv.FormatFloat(cfg.RMSNormEps, 'g', -1, 64), "--rope-theta", strconv.FormatFloat(cfg.RopeTheta, 'g', -1, 64)}
	if lora {
		lc := schemas.DefaultLoraConfig()
		targets := make([]string, len(lc.TargetModules))
		for i, m := range lc.TargetModules {
			targets[i] = strings.TrimSuffix(m, "_proj")
		}
		args = append(args, "--lora-r", strconv.Itoa(lc.R), "--lora-targets", strings.Join(targets, ","))
	}
	out, err := exec.Command(python, args...).Output()
	if err != nil {
		b.Fatalf("peer %v: %v", args, err)
	}
	var r struct {
		TokensPerS float64 `json:"tokens_per_s"`
		Threads    int     `json:"threads"`
		Torch      string  `json:"torch"`
		Mode       string  `json:"mode"`
		Linear     string  `json:"linear"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		b.Fatalf("peer output %q: %v", out, err)
	}
	b.ReportMetric(r.TokensPerS, "peer-tokens/s")
	return fmt.Sprintf("PyTorch %s peer, %s, %s linear, %d threads, same shapes: %.0f tokens/s", r.Torch, r.Mode, r.Linear, r.Threads, r.TokensPerS)
}

func BenchmarkTrainStories260KFull(b *testing.B) { benchTrain(b, "stories260K", false) }
func BenchmarkTrainStories260KLoRA(b *testing.B) { benchTrain(b, "stories260K", true) }
func BenchmarkTrain15mFull(b *testing.B)         { benchTrain(b, "15m", false) }
func BenchmarkTrain15mFullGraph(b *testing.B) {
	benchTrain(b, "15m", false, WithEngine(schemas.TrainEngineGraph))
}
func BenchmarkTrain15mLoRA(b *testing.B) { benchTrain(b, "15m", true) }
