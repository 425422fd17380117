package train

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/gomlx/gomlx/backends"
	"github.com/gomlx/gomlx/pkg/core/dtypes"
	. "github.com/gomlx/gomlx/pkg/core/graph" //nolint:revive,staticcheck // the GoMLX convention for graph code
	"github.com/gomlx/gomlx/pkg/core/shapes"
	"github.com/gomlx/gomlx/pkg/core/tensors"

	"github.com/largeforge/largeforge/internal/testenv"
	"github.com/largeforge/largeforge/model/checkpoint"
	"github.com/largeforge/largeforge/schemas"
)

// Training benchmarks print tokens/s, the GFLOP/s they achieve and, beside
// them, the backend's own large-matmul GFLOP/s measured in the same run
// (right after each timing: the machine's load varies). Run with
// `make bench` (-benchtime 1x: one timed optimizer step after a compiling
// one).
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
	rate := matmulGFLOPs(b, tr.be)
	b.ReportMetric(tokS, "tokens/s")
	b.ReportMetric(gf, "GFLOP/s")
	b.ReportMetric(rate, "matmul-GFLOP/s")
	kind := "full"
	if lora {
		kind = "LoRA"
	}
	b.Logf("%s %s training on the %s engine, %dx%d tokens/step: %.0f tokens/s, %.2f GFLOP/s (%s, N=%.0f) = %.0f%% of the backend's matmul 1024^3 %.2f GFLOP/s",
		name, kind, tr.engine, benchRows, benchSeq, tokS, gf, formula, n, 100*gf/rate, rate)
}

func BenchmarkTrainStories260KFull(b *testing.B) { benchTrain(b, "stories260K", false) }
func BenchmarkTrainStories260KLoRA(b *testing.B) { benchTrain(b, "stories260K", true) }
func BenchmarkTrain15mFull(b *testing.B)         { benchTrain(b, "15m", false) }
func BenchmarkTrain15mFullGraph(b *testing.B) {
	benchTrain(b, "15m", false, WithEngine(schemas.TrainEngineGraph))
}
func BenchmarkTrain15mLoRA(b *testing.B) { benchTrain(b, "15m", true) }
