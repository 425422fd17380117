package model

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gomlx/gomlx/pkg/core/dtypes"
	. "github.com/gomlx/gomlx/pkg/core/graph" //nolint:revive,staticcheck // the GoMLX convention for graph code
	"github.com/gomlx/gomlx/pkg/core/tensors"

	"github.com/largeforge/largeforge/internal/benchenv"
	"github.com/largeforge/largeforge/internal/testenv"
	"github.com/largeforge/largeforge/model/checkpoint"
)

// Benchmarks print tokens/s, the GFLOP/s they achieve, and beside them the
// backend's own large-matmul GFLOP/s measured in the same run. Run with
// `make bench` (-benchtime 1x: each benchmark times a fixed workload).

var benchBatches = []int{1, 8, 32, 64}

const (
	benchPrompt = 16 // prompt tokens per row
	benchSteps  = 32 // decode steps timed
)

var (
	matmulOnce  sync.Once
	matmulG     *Graph
	matmulLHS   *tensors.Tensor
	benchModels = map[string]*Model{}
	benchMu     sync.Mutex
)

// backendMatmulGFLOPs measures the backend's float32 matmul rate on a large
// square product. The machine's load varies, so each benchmark measures it
// again right after its own timing.
func backendMatmulGFLOPs(b *testing.B, m *Model) float64 {
	b.Helper()
	const n = 1024
	matmulOnce.Do(func() {
		x := make([]float32, n*n)
		for i := range x {
			x[i] = float32(i%7) * 0.01
		}
		matmulLHS = tensors.FromFlatDataAndDimensions(x, n, n)
		matmulG = NewGraph(m.backend, "matmul")
		l := param(matmulG, "lhs", dtypes.Float32, n, n)
		r := param(matmulG, "rhs", dtypes.Float32, n, n)
		matmulG.Compile(DotGeneral(l, []int{1}, nil, r, []int{0}, nil))
		matmulG.Run(matmulLHS, matmulLHS)[0].FinalizeAll() // warm up
	})
	reps := 3
	start := time.Now()
	for range reps {
		matmulG.Run(matmulLHS, matmulLHS)[0].FinalizeAll()
	}
	return 2 * n * n * n * float64(reps) / time.Since(start).Seconds() / 1e9
}

// benchModel returns stories260K (from ../shared) or the 15m preset with random weights.
func benchModel(b *testing.B, name string) *Model {
	b.Helper()
	benchMu.Lock()
	defer benchMu.Unlock()
	if m, ok := benchModels[name]; ok {
		return m
	}
	var (
		m   *Model
		err error
	)
	switch name {
	case "stories260K":
		p := testenv.SharedFile(b, "models/stories260K/model.safetensors")
		m, err = Load(strings.TrimSuffix(p, "/model.safetensors"))
	default:
		cfg, cerr := checkpoint.PresetConfig(name)
		if cerr != nil {
			b.Fatal(cerr)
		}
		m, err = New(&checkpoint.Checkpoint{Config: cfg, Tensors: randomTensors(cfg, 1)})
	}
	if err != nil {
		b.Fatal(err)
	}
	benchModels[name] = m
	return m
}

// flopsPerToken counts the multiply-adds (x2) of one token's pass through
// the layers at context length ctxLen (projections, MLP, attention), or of
// the LM head alone when head is set.
func flopsPerToken(cfg checkpoint.Config, ctxLen int, head bool) float64 {
	if head {
		return 2 * float64(cfg.HiddenSize*cfg.VocabSize)
	}
	e, q, kv := cfg.HiddenSize, cfg.NumHeads*cfg.HeadDim, cfg.NumKVHeads*cfg.HeadDim
	perLayer := e*q*2 + e*kv*2 + 3*e*cfg.IntermediateSize + 2*cfg.NumHeads*cfg.HeadDim*ctxLen
	return 2 * float64(cfg.NumLayers*perLayer)
}

// peakRSS returns the process's peak resident set (VmHWM) in MiB, and resets it.
func peakRSS() float64 {
	defer func() { _ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			f := strings.Fields(line)
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}

func benchPrompts(m *Model, n int) [][]int {
	return benchRows(m, n, benchPrompt)
}

// benchRows are n rows of length tokens, deterministic.
func benchRows(m *Model, n, length int) [][]int {
	ps := make([][]int, n)
	for i := range ps {
		p := make([]int, length)
		for j := range p {
			p[j] = (i*31 + j*7 + 3) % m.cfg.VocabSize
		}
		ps[i] = p
	}
	return ps
}

// nativeMatmulGFLOPs measures the native kernels' float32 rate on the same
// large square product as backendMatmulGFLOPs.
func nativeMatmulGFLOPs() float64 {
	k := newKernelClock()
	for range 3 {
		k.tick()
	}
	return k.gflops()
}

// kernelClock times the native kernels' 1024^3 product, one at a time, so
// that a benchmark can interleave it with its own timings: on a machine
// other work loads, both then see the same load.
type kernelClock struct {
	p    *packedMatrix
	x, y []float32
	took time.Duration
	n    int
}

const kernelClockN = 1024

func newKernelClock() *kernelClock {
	const n = kernelClockN
	x := make([]float32, n*n)
	for i := range x {
		x[i] = float32(i%7) * 0.01
	}
	k := &kernelClock{p: packMatrix(x, n, n), x: x, y: make([]float32, n*n)}
	k.p.mul(k.y, k.x, n, nil) // warm up
	return k
}

// tick times one product.
func (k *kernelClock) tick() {
	t0 := time.Now()
	k.p.mul(k.y, k.x, kernelClockN, nil)
	k.took += time.Since(t0)
	k.n++
}

func (k *kernelClock) gflops() float64 {
	return 2 * kernelClockN * kernelClockN * kernelClockN * float64(k.n) / k.took.Seconds() / 1e9
}

// benchDecode times prefill or decode on both engines. Each reports its
// GFLOP/s beside the large-matmul rate of what it computes with: the
// backend's for the graph engine, the kernels' for the native one (both
// measured in the same run).
func benchDecode(b *testing.B, name string, prefillOnly bool) {
	for _, engine := range []string{EngineNative, EngineGraph} {
		for _, batch := range benchBatches {
			benchDecodeOne(b, name, engine, batch, prefillOnly)
		}
	}
}

func benchDecodeOne(b *testing.B, name, engine string, batch int, prefillOnly bool) {
	b.Run(fmt.Sprintf("%s/%s/batch=%d", name, engine, batch), func(b *testing.B) {
		m := benchModel(b, name)
		if engine == EngineNative && m.native == nil {
			b.Skip("no native engine on this backend")
		}
		backendMatmulGFLOPs(b, m) // compile it before the timing
		ctx := context.Background()
		prompts := benchPrompts(m, batch)
		slots := make([]int, batch)
		for i := range slots {
			slots[i] = i
		}
		cacheLen := bucketLen(benchPrompt+benchSteps+1, m.maxSeq)
		run := func() (prefill, decode time.Duration) {
			st := m.newStateOn(engine, batch, cacheLen)
			defer st.release()
			t0 := time.Now()
			logits, err := st.prefill(ctx, slots, prompts)
			if err != nil {
				b.Fatal(err)
			}
			prefill = time.Since(t0)
			if prefillOnly {
				return prefill, 0
			}
			tokens := make([]int, batch)
			pos := make([]int, batch)
			for i := range tokens {
				tokens[i], pos[i] = argmax(logits[i]), benchPrompt
			}
			t0 = time.Now()
			for range benchSteps {
				rows, err := st.step(ctx, tokens, pos)
				if err != nil {
					b.Fatal(err)
				}
				for i := range tokens {
					tokens[i] = argmax(rows[i])
					pos[i]++
				}
			}
			return prefill, time.Since(t0)
		}
		run() // compile
		peakRSS()
		b.ResetTimer()
		var pre, dec time.Duration
		for range b.N {
			p, d := run()
			pre += p
			dec += d
		}
		b.StopTimer()
		rate, rateName := backendMatmulGFLOPs(b, m), "backend "+m.Backend()
		if engine == EngineNative {
			rate, rateName = nativeMatmulGFLOPs(), "native kernels"
		}
		n := float64(b.N)
		if prefillOnly {
			toks := float64(batch*benchPrompt) * n
			tps := toks / pre.Seconds()
			// The LM head runs on each row's last token only.
			gf := tps * (flopsPerToken(m.cfg, benchPrompt/2, false) + flopsPerToken(m.cfg, 0, true)/benchPrompt) / 1e9
			b.ReportMetric(tps, "tokens/s")
			b.ReportMetric(gf, "GFLOP/s")
			b.ReportMetric(rate, "matmul-GFLOP/s")
			b.Logf("%s %s prefill batch %d: %.0f tokens/s, %.2f GFLOP/s (%s matmul 1024^3 %.2f GFLOP/s, %.0f%%), peak RSS %.0f MiB; %s",
				name, engine, batch, tps, gf, rateName, rate, 100*gf/rate, peakRSS(), benchenv.Machine())
			return
		}
		toks := float64(batch*benchSteps) * n
		tps := toks / dec.Seconds()
		gf := tps * (flopsPerToken(m.cfg, benchPrompt+benchSteps/2, false) + flopsPerToken(m.cfg, 0, true)) / 1e9
		b.ReportMetric(tps, "tokens/s")
		b.ReportMetric(gf, "GFLOP/s")
		b.ReportMetric(rate, "matmul-GFLOP/s")
		b.Logf("%s %s decode batch %d: %.0f tokens/s, %.2f GFLOP/s (%s matmul 1024^3 %.2f GFLOP/s, %.0f%%), %.2f ms/step, peak RSS %.0f MiB; %s",
			name, engine, batch, tps, gf, rateName, rate, 100*gf/rate, dec.Seconds()*1000/float64(benchSteps)/n, peakRSS(), benchenv.Machine())
	})
}

func BenchmarkDecode(b *testing.B) {
	benchDecode(b, "stories260K", false)
	benchDecode(b, "15m", false)
}

func BenchmarkPrefill(b *testing.B) {
	benchDecode(b, "stories260K", true)
	benchDecode(b, "15m", true)
}

// randomTensors makes normal(0, 0.02) weights (norms one) for cfg.
func randomTensors(cfg checkpoint.Config, seed uint64) map[string]*checkpoint.Tensor {
	rng := rand.New(rand.NewPCG(seed, 1))
	out := map[string]*checkpoint.Tensor{}
	for _, w := range checkpoint.Layout(cfg) {
		t := &checkpoint.Tensor{Shape: w.Shape}
		t.Data = make([]float32, t.NumElements())
		for i := range t.Data {
			if strings.HasSuffix(w.Name, "norm.weight") {
				t.Data[i] = 1
			} else {
				t.Data[i] = float32(rng.NormFloat64() * 0.02)
			}
		}
		out[w.Name] = t
	}
	return out
}

// Long prompts (issue 17, point 4): BenchmarkPrefillLong prefills `15m` at
// batch 8 x 128 tokens, BenchmarkScore scores LF_BENCH_SCORE_ROWS rows
// (default 10,000) of 128 tokens; each prints its figure beside the
// kernels' 1024^3 rate and PyTorch's (testdata/peer_prefill.py) from the
// same run, with the CPU model and thread count.
const (
	longBatch  = 8
	longPrompt = 128
)

// peerResult is what testdata/peer_prefill.py prints.
type peerResult struct {
	TokensPerS float64 `json:"tokens_per_s"`
	RowsPerS   float64 `json:"rows_per_s"`
	Threads    int     `json:"threads"`
	Torch      string  `json:"torch"`
	Linear     string  `json:"linear"`
}

// peerFigure runs testdata/peer_prefill.py (PyTorch, Debian's python3-torch)
// with the model's shape and GOMAXPROCS threads, and describes its figure;
// without torch it says so.
func peerFigure(b *testing.B, cfg checkpoint.Config, args ...string) (peerResult, string) {
	b.Helper()
	python := ""
	for _, p := range []string{"/usr/bin/python3", "python3"} {
		if exec.Command(p, "-c", "import torch").Run() == nil {
			python = p
			break
		}
	}
	if python == "" {
		return peerResult{}, "PyTorch peer: not run, no python3 with torch (Debian's python3-torch) installed"
	}
	args = append([]string{"testdata/peer_prefill.py"}, args...)
	args = append(args, "--threads", strconv.Itoa(runtime.GOMAXPROCS(0)),
		"--vocab", strconv.Itoa(cfg.VocabSize), "--hidden", strconv.Itoa(cfg.HiddenSize),
		"--inter", strconv.Itoa(cfg.IntermediateSize), "--layers", strconv.Itoa(cfg.NumLayers),
		"--heads", strconv.Itoa(cfg.NumHeads), "--kv-heads", strconv.Itoa(cfg.NumKVHeads),
		"--head-dim", strconv.Itoa(cfg.HeadDim))
	out, err := exec.Command(python, args...).Output()
	if err != nil {
		b.Fatalf("peer %v: %v", args, err)
	}
	var r peerResult
	if err := json.Unmarshal(out, &r); err != nil {
		b.Fatalf("peer output %q: %v", out, err)
	}
	return r, fmt.Sprintf("PyTorch %s (%s linear, %d threads): %.0f tokens/s, %.1f rows/s", r.Torch, r.Linear, r.Threads, r.TokensPerS, r.RowsPerS)
}

func BenchmarkPrefillLong(b *testing.B) {
	m := benchModel(b, "15m")
	if m.native == nil {
		b.Skip("no native engine on this backend")
	}
	ctx := context.Background()
	prompts := benchRows(m, longBatch, longPrompt)
	slots := make([]int, longBatch)
	for i := range slots {
		slots[i] = i
	}
	cacheLen := bucketLen(longPrompt+1, m.maxSeq)
	run := func() time.Duration {
		st := m.newStateOn(EngineNative, longBatch, cacheLen)
		defer st.release()
		t0 := time.Now()
		if _, err := st.prefill(ctx, slots, prompts); err != nil {
			b.Fatal(err)
		}
		return time.Since(t0)
	}
	run() // warm up
	reps := benchenv.Int("LF_BENCH_PREFILL_REPS", 5)
	clock := newKernelClock()
	b.ResetTimer()
	var took time.Duration
	for range b.N * reps {
		took += run()
		b.StopTimer()
		clock.tick() // the kernels' rate under the same load, between the timings
		b.StartTimer()
	}
	b.StopTimer()
	rate := clock.gflops()
	_, peer := peerFigure(b, m.cfg, "prefill", "--batch", strconv.Itoa(longBatch), "--seq", strconv.Itoa(longPrompt))
	tps := float64(longBatch*longPrompt*b.N*reps) / took.Seconds()
	// Every layer for every token, the LM head for each row's last token.
	gf := tps * (flopsPerToken(m.cfg, longPrompt/2, false) + flopsPerToken(m.cfg, 0, true)/longPrompt) / 1e9
	b.ReportMetric(tps, "tokens/s")
	b.ReportMetric(gf, "GFLOP/s")
	b.ReportMetric(rate, "matmul-GFLOP/s")
	b.Logf("15m native prefill %dx%d: %.0f tokens/s, %.2f GFLOP/s (native kernels matmul 1024^3 %.2f GFLOP/s, %.0f%%); %s; %s, peak RSS %.0f MiB",
		longBatch, longPrompt, tps, gf, rate, 100*gf/rate, peer, benchenv.Machine(), peakRSS())
}

func BenchmarkScore(b *testing.B) {
	m := benchModel(b, "15m")
	if m.native == nil {
		b.Skip("no native engine on this backend")
	}
	ctx := context.Background()
	n := benchenv.Int("LF_BENCH_SCORE_ROWS", 10000)
	rows := benchRows(m, n, longPrompt)
	reqs := make([]ScoreRequest, n)
	for i, r := range rows {
		reqs[i] = ScoreRequest{PromptIDs: r[:longPrompt/2], CompletionIDs: r[longPrompt/2:]}
	}
	if _, err := m.Score(ctx, reqs[:min(n, 8)]); err != nil { // warm up
		b.Fatal(err)
	}
	clock := newKernelClock()
	peakRSS()
	b.ResetTimer()
	var took time.Duration
	for range b.N {
		// Calls of 256 rows, the kernels' rate timed between them.
		for lo := 0; lo < n; lo += 256 {
			t0 := time.Now()
			if _, err := m.Score(ctx, reqs[lo:min(lo+256, n)]); err != nil {
				b.Fatal(err)
			}
			took += time.Since(t0)
			b.StopTimer()
			clock.tick()
			b.StartTimer()
		}
	}
	b.StopTimer()
	rss := peakRSS()
	rate := clock.gflops()
	_, peer := peerFigure(b, m.cfg, "score", "--rows", strconv.Itoa(min(n, 256)), "--batch", "8", "--seq", strconv.Itoa(longPrompt))
	rps := float64(n*b.N) / took.Seconds()
	tps := rps * longPrompt
	// Every layer and the LM head for every token but each row's last.
	gf := rps * float64(longPrompt-1) * (flopsPerToken(m.cfg, longPrompt/2, false) + flopsPerToken(m.cfg, 0, true)) / 1e9
	b.ReportMetric(rps, "rows/s")
	b.ReportMetric(tps, "tokens/s")
	b.ReportMetric(gf, "GFLOP/s")
	b.Logf("15m native score %d rows of %d tokens: %.1f rows/s, %.0f tokens/s, %.2f GFLOP/s (native kernels matmul 1024^3 %.2f GFLOP/s, %.0f%%); %s; %s, peak RSS %.0f MiB",
		n, longPrompt, rps, tps, gf, rate, 100*gf/rate, peer, benchenv.Machine(), rss)
}
