package train

import (
	"context"
	"encoding/json"
	"errors"
	"image/color"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/largeforge/largeforge/model"
	"github.com/largeforge/largeforge/model/checkpoint"
	"github.com/largeforge/largeforge/schemas"
)

func TestLearningRate(t *testing.T) {
	tests := []struct {
		name    string
		kind    string
		step    int
		want    float64
		wantErr bool
	}{
		{name: "warmup start", kind: "cosine", step: 0, want: 0},
		{name: "warmup half", kind: "linear", step: 5, want: 0.5},
		{name: "cosine peak", kind: "cosine", step: 10, want: 1},
		{name: "cosine middle", kind: "cosine", step: 60, want: 0.5},
		{name: "cosine end", kind: "cosine", step: 110, want: 0},
		{name: "linear middle", kind: "linear", step: 60, want: 0.5},
		{name: "constant ignores warmup", kind: "constant", step: 0, want: 1},
		{name: "constant with warmup", kind: "constant_with_warmup", step: 5, want: 0.5},
		{name: "constant with warmup after", kind: "constant_with_warmup", step: 100, want: 1},
		{name: "polynomial", kind: "polynomial", step: 60, want: 0.5 + 0.5e-7},
		{name: "unknown", kind: "wavy", step: 3, wantErr: true},
		{name: "wsd needs num_decay_steps", kind: "warmup_stable_decay", step: 3, wantErr: true},
		{name: "min lr needs min_lr", kind: "cosine_with_min_lr", step: 3, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := LearningRate(tc.kind, 1, tc.step, 10, 110)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if err != nil {
				if !errors.Is(err, ErrInvalidOption) {
					t.Errorf("err %v does not wrap ErrInvalidOption", err)
				}
				return
			}
			if math.Abs(got-tc.want) > 1e-9 {
				t.Errorf("lr = %g, want %g", got, tc.want)
			}
		})
	}
}

func TestRenderPromptTokensCarryNoWeight(t *testing.T) {
	_, _, tok := tinyBase(t)
	r, err := NewRenderer(tok, 1024)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		rec      schemas.Record
		response string // the text of the weighted tokens
		wantErr  bool
	}{
		{name: "alpaca", rec: schemas.Record{Format: schemas.FormatAlpaca, Alpaca: schemas.Alpaca{Instruction: "Say hi", Output: "hi there"}}, response: "hi there</s>"},
		{name: "alpaca with input", rec: schemas.Record{Format: schemas.FormatAlpaca, Alpaca: schemas.Alpaca{Instruction: "Echo", Input: "abc", Output: "abc"}}, response: "abc</s>"},
		{name: "sharegpt", rec: schemas.Record{Format: schemas.FormatShareGPT, ShareGPT: schemas.ShareGPT{Conversations: []schemas.Turn{
			{From: "human", Value: "q1"}, {From: "gpt", Value: "a1"}, {From: "human", Value: "q2"}, {From: "gpt", Value: "a2"},
		}}}, response: "a1<|im_end|>\na2<|im_end|>\n</s>"},
		{name: "dpo", rec: schemas.Record{Format: schemas.FormatDPO, DPO: schemas.DPO{Prompt: "p", Chosen: "c", Rejected: "r"}}, wantErr: true},
		{name: "no gpt turn", rec: schemas.Record{Format: schemas.FormatShareGPT, ShareGPT: schemas.ShareGPT{Conversations: []schemas.Turn{
			{From: "human", Value: "q1"}, {From: "human", Value: "q2"},
		}}}, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ex, _, err := r.Render(tc.rec)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if err != nil {
				if !errors.Is(err, ErrUnsupportedRecord) {
					t.Errorf("err %v does not wrap ErrUnsupportedRecord", err)
				}
				return
			}
			var weighted []int
			for i, w := range ex.Weights {
				if w != 0 && w != 1 {
					t.Fatalf("weight %g at %d", w, i)
				}
				if w == 1 {
					weighted = append(weighted, int(ex.Tokens[i]))
				}
			}
			if got := tok.Decode(weighted, false); got != tc.response {
				t.Errorf("weighted tokens decode to %q, want %q", got, tc.response)
			}
			if ex.Weights[0] != 0 {
				t.Errorf("first token has weight %g", ex.Weights[0])
			}
		})
	}
	// The Alpaca prompt itself is all weight 0.
	ex, _, _ := r.Render(schemas.Record{Format: schemas.FormatAlpaca, Alpaca: schemas.Alpaca{Instruction: "Say hi", Output: "yo"}})
	prompt := len(tok.Encode(AlpacaPrompt("Say hi", ""), false)) + 1 // + BOS
	if slices.ContainsFunc(ex.Weights[:prompt], func(w float32) bool { return w != 0 }) {
		t.Errorf("prompt tokens carry weight: %v", ex.Weights[:prompt])
	}
	// Truncation.
	short, _ := NewRenderer(tok, 10)
	ex, cut, err := short.Render(schemas.Record{Format: schemas.FormatAlpaca, Alpaca: schemas.Alpaca{Instruction: "Say hi", Output: "yo"}})
	if err != nil || !cut || len(ex.Tokens) != 10 {
		t.Errorf("truncated render: %d tokens, cut %v, err %v", len(ex.Tokens), cut, err)
	}
}

func TestMakeBatchMasksPadding(t *testing.T) {
	exs := []Example{{Tokens: []int32{1, 2, 3}, Weights: []float32{0, 0, 1}}}
	b := MakeBatch(exs, 2, 4, 9)
	wantTok := []int32{1, 2, 3, 9, 9, 9, 9, 9}
	wantTgt := []int32{2, 3, 9, 9, 9, 9, 9, 9}
	wantW := []float32{0, 1, 0, 0, 0, 0, 0, 0}
	if !slices.Equal(b.Tokens, wantTok) || !slices.Equal(b.Targets, wantTgt) || !slices.Equal(b.Weights, wantW) {
		t.Errorf("batch %+v", b)
	}
	// A row longer than the batch is cut, never spilling into the next row.
	long := []Example{{Tokens: []int32{1, 2, 3, 4, 5, 6}, Weights: []float32{0, 1, 1, 1, 1, 1}}, {Tokens: []int32{7}, Weights: []float32{0}}}
	b = MakeBatch(long, 2, 4, 9)
	if !slices.Equal(b.Tokens, []int32{1, 2, 3, 4, 7, 9, 9, 9}) || !slices.Equal(b.Targets, []int32{2, 3, 4, 9, 9, 9, 9, 9}) ||
		!slices.Equal(b.Weights, []float32{1, 1, 1, 0, 0, 0, 0, 0}) {
		t.Errorf("cut batch %+v", b)
	}
	if (Example{}).ResponseTokens() != 0 {
		t.Error("empty example has response tokens")
	}
}

func TestEpochOrderDeterministic(t *testing.T) {
	a, b, c := EpochOrder(1, 0, 50), EpochOrder(1, 0, 50), EpochOrder(1, 1, 50)
	if !slices.Equal(a, b) {
		t.Error("same seed and epoch give different orders")
	}
	if slices.Equal(a, c) {
		t.Error("epochs 0 and 1 share an order")
	}
	s := slices.Clone(a)
	slices.Sort(s)
	for i, v := range s {
		if v != i {
			t.Fatalf("not a permutation: %v", a)
		}
	}
}

// TestGradientMatchesFiniteDifference checks the train step's gradient of
// the summed response loss against central differences of Evaluate.
func TestGradientMatchesFiniteDifference(t *testing.T) {
	_, ck, tok := tinyBase(t)
	cfg := testConfig("")
	cfg.PerDeviceBatchSize = 2
	tr, err := New(cfg, ck, WithMaxSeqLen(64))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	exs := render(t, tok, syntheticTask(2), 64)
	for i := range exs { // keep it short: the last 24 tokens
		exs[i].Tokens, exs[i].Weights = exs[i].Tokens[len(exs[i].Tokens)-24:], exs[i].Weights[len(exs[i].Weights)-24:]
		exs[i].Weights[10] = 1 // a prompt position with loss, too
	}
	b := tr.makeBatch(exs, 2)
	acc, _, wSum, err := tr.microStep(b, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	lossSum := func() float64 {
		t.Helper()
		r, err := tr.Evaluate(context.Background(), exs)
		if err != nil {
			t.Fatal(err)
		}
		return r.Loss * wSum
	}
	for _, target := range []string{"model.layers.2.self_attn.k_proj.weight", "model.layers.0.input_layernorm.weight", "model.embed_tokens.weight", "lm_head.weight"} {
		pi := slices.Index(tr.names, target)
		if pi < 0 {
			continue
		}
		grad, err := tensors.CopyFlatData[float32](acc[pi])
		if err != nil {
			t.Fatal(err)
		}
		idx := 0
		for i, g := range grad {
			if math.Abs(float64(g)) > math.Abs(float64(grad[idx])) {
				idx = i
			}
		}
		orig, _ := tensors.CopyFlatData[float32](tr.params[pi])
		shifted := func(d float32) float64 {
			data := slices.Clone(orig)
			data[idx] += d
			tr.params[pi] = tensors.FromFlatDataAndDimensions(data, tr.params[pi].Shape().Dimensions...)
			return lossSum()
		}
		const h = 1e-2
		fd := (shifted(h) - shifted(-h)) / (2 * h)
		tr.params[pi] = tensors.FromFlatDataAndDimensions(orig, tr.params[pi].Shape().Dimensions...)
		if got := float64(grad[idx]); math.Abs(got-fd) > 2e-2*math.Abs(fd)+1e-3 {
			t.Errorf("d loss / d %s[%d]: gradient %g, finite difference %g", target, idx, got, fd)
		} else {
			t.Logf("%s[%d]: gradient %g, finite difference %g", target, idx, got, fd)
		}
	}
}

// TestSFTLowersLossAndSaves trains the tiny model on a synthetic task and
// requires the response loss to fall by at least 60%, then checks the
// saved checkpoints.
func TestSFTLowersLossAndSaves(t *testing.T) {
	dir, ck, tok := tinyBase(t)
	out := filepath.Join(t.TempDir(), "out")
	cfg := testConfig(out)
	cfg.NumEpochs = 10
	cfg.PerDeviceBatchSize = 4
	cfg.GradientAccumulationSteps = 2
	cfg.LearningRate = 1e-2
	cfg.WarmupRatio = 0.05
	cfg.LoggingSteps = 5
	cfg.SaveSteps = 10
	cfg.SaveTotalLimit = 2
	reg := prometheus.NewRegistry()
	tr, err := New(cfg, ck, WithMaxSeqLen(64), WithTokenizerDir(dir), WithRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	exs := shortTask(t, tok, 16)
	ctx := context.Background()
	before, err := tr.Evaluate(ctx, exs)
	if err != nil {
		t.Fatal(err)
	}
	res, err := tr.Train(ctx, exs)
	if err != nil {
		t.Fatal(err)
	}
	after, err := tr.Evaluate(ctx, exs)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("eval loss %.4f -> %.4f, accuracy %.3f -> %.3f, %d steps in %v (%.1f samples/s)",
		before.Loss, after.Loss, before.Accuracy, after.Accuracy, res.GlobalStep, res.Runtime, res.SamplesPerSecond)
	if res.GlobalStep != 20 {
		t.Errorf("global step %d, want 20 (16 examples / (4*2) * 10 epochs)", res.GlobalStep)
	}
	if after.Loss > 0.4*before.Loss {
		t.Errorf("eval loss %.4f -> %.4f: fell by less than 60%%", before.Loss, after.Loss)
	}
	mfs, err := reg.Gather()
	if err != nil || len(mfs) != len(MetricNames)-3 {
		t.Errorf("%d metrics gathered (err %v), want %d: no evaluation, no eval gauges", len(mfs), err, len(MetricNames)-3)
	}
	for _, mf := range mfs {
		if evalMetrics[mf.GetName()] {
			t.Errorf("gauge %s present before any evaluation", mf.GetName())
		}
		if mf.GetName() == "global_step" {
			if got := mf.GetMetric()[0].GetGauge().GetValue(); got != 20 {
				t.Errorf("global_step gauge %g, want 20", got)
			}
		}
	}
	// save_total_limit 2 keeps checkpoint-10 and checkpoint-20.
	want := []string{filepath.Join(out, "checkpoint-10"), filepath.Join(out, "checkpoint-20")}
	if !slices.Equal(res.Checkpoints, want) {
		t.Errorf("checkpoints %v, want %v", res.Checkpoints, want)
	}
	for _, f := range []string{"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", TrainerStateFile, TrainingArgsFile, TrainingArgsBinFile, OptimizerFile} {
		if _, err := os.Stat(filepath.Join(out, "checkpoint-20", f)); err != nil {
			t.Error(err)
		}
	}
	f, err := os.Open(filepath.Join(out, LossCurveFile))
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(f)
	f.Close()
	if err != nil {
		t.Fatalf("loss curve: %v", err)
	}
	if img.Bounds().Dx() != plotW || img.Bounds().Dy() != plotH {
		t.Errorf("loss curve %v", img.Bounds())
	}
	drawn := 0
	for x := plotLeft + 1; x < plotW-plotRight; x++ {
		for y := plotTop; y < plotH-plotBott; y++ {
			if c := color.RGBAModel.Convert(img.At(x, y)).(color.RGBA); c == plotTrain {
				drawn++
			}
		}
	}
	if drawn < 50 {
		t.Errorf("loss curve has %d training-loss pixels", drawn)
	}
	var st trainerState
	data, err := os.ReadFile(filepath.Join(out, TrainerStateFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatal(err)
	}
	tokens := 0
	for _, e := range exs {
		tokens += min(len(e.Tokens), 64)
	}
	if st.NumInputTokensSeen != tokens*10 {
		t.Errorf("num_input_tokens_seen %d, want %d (the examples' tokens times 10 epochs)", st.NumInputTokensSeen, tokens*10)
	}
	if st.GlobalStep != 20 || len(st.LogHistory) != 5 || st.LogHistory[0]["global_step"] != float64(5) {
		t.Errorf("trainer state: step %d, %d log entries: %v", st.GlobalStep, len(st.LogHistory), st.LogHistory)
	}
	for _, k := range []string{"loss", "learning_rate", "epoch", "global_step", "grad_norm", "train_samples_per_second"} {
		if _, ok := st.LogHistory[0][k]; !ok {
			t.Errorf("log_history entry lacks %s: %v", k, st.LogHistory[0])
		}
	}

	// The final model reloads with the same logits.
	reloaded, err := checkpoint.Load(out)
	if err != nil {
		t.Fatal(err)
	}
	tr2, err := New(cfg, reloaded, WithMaxSeqLen(64))
	if err != nil {
		t.Fatal(err)
	}
	defer tr2.Close()
	a, err := tr.Logits(ctx, exs[0].Tokens)
	if err != nil {
		t.Fatal(err)
	}
	b, err := tr2.Logits(ctx, exs[0].Tokens)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(a, b) {
		t.Error("reloaded final model gives different logits")
	}
	// The inference Model (fused weights) agrees with the trainer's graph.
	lm, err := model.Load(out)
	if err != nil {
		t.Fatal(err)
	}
	defer lm.Close()
	ids := make([]int, len(exs[0].Tokens))
	for i, id := range exs[0].Tokens {
		ids[i] = int(id)
	}
	inf, err := lm.Logits(ctx, [][]int{ids})
	if err != nil {
		t.Fatal(err)
	}
	worst := 0.0
	for i, row := range inf[0] {
		for j, v := range row {
			worst = math.Max(worst, math.Abs(float64(v-a[i*len(row)+j])))
		}
	}
	if worst > 1e-3 {
		t.Errorf("inference logits differ from the trainer's by up to %g", worst)
	}
}
