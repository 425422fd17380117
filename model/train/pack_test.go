package train

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/gomlx/gomlx/pkg/core/tensors"

	"github.com/largeforge/largeforge/schemas"
)

func TestBucketLen(t *testing.T) {
	tests := []struct {
		name string
		n    int
		want int
	}{
		{name: "shortest", n: 1, want: 16},
		{name: "16", n: 16, want: 16},
		{name: "17", n: 17, want: 32},
		{name: "64", n: 64, want: 64},
		{name: "65", n: 65, want: 80},
		{name: "128", n: 128, want: 128},
		{name: "129", n: 129, want: 160},
		{name: "257", n: 257, want: 320},
		{name: "513", n: 513, want: 640},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := bucketLen(tc.n)
			if got != tc.want {
				t.Errorf("bucketLen(%d) = %d, want %d", tc.n, got, tc.want)
			}
			if got < tc.n || (tc.n > 16 && float64(got) > 1.25*float64(tc.n)+16) {
				t.Errorf("bucketLen(%d) = %d pads too much", tc.n, got)
			}
		})
	}
}

func TestPackExamples(t *testing.T) {
	ex := func(n int, w float32) Example {
		e := Example{Tokens: make([]int32, n), Weights: make([]float32, n)}
		for i := range e.Tokens {
			e.Tokens[i], e.Weights[i] = int32(n*10+i), w
		}
		return e
	}
	got := PackExamples([]Example{ex(3, 1), ex(4, 1), ex(6, 1), ex(12, 1), ex(2, 0)}, 10)
	wantLens := []int{7, 6, 10, 2}
	if len(got) != len(wantLens) {
		t.Fatalf("%d rows, want %d", len(got), len(wantLens))
	}
	for i, r := range got {
		if len(r.Tokens) != wantLens[i] || len(r.Weights) != wantLens[i] {
			t.Errorf("row %d: %d tokens, %d weights, want %d", i, len(r.Tokens), len(r.Weights), wantLens[i])
		}
	}
	// The first token of each example is no target; the rest keep their weights.
	wantW := []float32{0, 1, 1, 0, 1, 1, 1}
	for i, w := range got[0].Weights {
		if w != wantW[i] {
			t.Errorf("row 0 weight %d = %v, want %v", i, w, wantW[i])
		}
	}
	if got[0].Tokens[3] != 40 {
		t.Errorf("row 0 token 3 = %d, want the second example's first token 40", got[0].Tokens[3])
	}
	if got[2].ResponseTokens() != 9 {
		t.Errorf("cut example carries %d response tokens, want 9", got[2].ResponseTokens())
	}
}

func TestRenderAlpacaAsChat(t *testing.T) {
	_, _, tok := tinyBase(t)
	rec := schemas.Record{Format: schemas.FormatAlpaca, Alpaca: schemas.Alpaca{Instruction: "Describe the sea.", Input: "Be brief.", Output: "Blue."}}
	chat, err := NewRenderer(tok, 1024, PromptTemplateChat)
	if err != nil {
		t.Fatal(err)
	}
	ex, _, err := chat.Render(rec)
	if err != nil {
		t.Fatal(err)
	}
	var prompt, reply []int
	for i, id := range ex.Tokens {
		if ex.Weights[i] > 0 {
			reply = append(reply, int(id))
		} else {
			prompt = append(prompt, int(id))
		}
	}
	p, r := tok.Decode(prompt, false), tok.Decode(reply, false)
	if !strings.Contains(p, "<|im_start|>user\nDescribe the sea.\n\nBe brief.<|im_end|>") || !strings.HasSuffix(p, "<|im_start|>assistant\n") {
		t.Errorf("prompt part %q is not the ChatML user turn and generation prompt", p)
	}
	if !strings.HasPrefix(r, "Blue.<|im_end|>") {
		t.Errorf("loss part %q is not the reply and its end of turn", r)
	}
	alpaca, err := NewRenderer(tok, 1024)
	if err != nil {
		t.Fatal(err)
	}
	ax, _, err := alpaca.Render(rec)
	if err != nil {
		t.Fatal(err)
	}
	if len(ax.Tokens) <= len(ex.Tokens) {
		t.Errorf("alpaca rendering has %d tokens, chat %d: want the chat one shorter", len(ax.Tokens), len(ex.Tokens))
	}
	if _, err := NewRenderer(tok, 1024, "vicuna"); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("unknown template: err = %v, want ErrInvalidOption", err)
	}
}

// The fused step (last micro-batch and AdamW in one graph) leaves the same
// weights as a micro-step followed by the separate AdamW graph.
func TestFusedStepMatchesSeparateApply(t *testing.T) {
	_, ck, tok := tinyBase(t)
	exs := shortTask(t, tok, 4)
	cfg := testConfig("")
	cfg.PerDeviceBatchSize = 2
	for _, accum := range []bool{false, true} {
		a, err := New(cfg, ck, WithMaxSeqLen(32))
		if err != nil {
			t.Fatal(err)
		}
		b, err := New(cfg, ck, WithMaxSeqLen(32))
		if err != nil {
			t.Fatal(err)
		}
		b1, b2 := a.makeBatch(exs[:2], 2), a.makeBatch(exs[2:], 2)
		var acc []*tensors.Tensor
		prior := 0.0
		if accum {
			if acc, _, prior, err = a.microStep(b1, nil, 0); err != nil {
				t.Fatal(err)
			}
		}
		_, ws, gnA, err := a.trainStep(b2, acc, prior, 1e-2, 1)
		if err != nil {
			t.Fatal(err)
		}
		var accB []*tensors.Tensor
		wB := 0.0
		if accum {
			if accB, _, wB, err = b.microStep(b1, nil, 0); err != nil {
				t.Fatal(err)
			}
		}
		accB, _, ws2, err := b.microStep(b2, accB, 1)
		if err != nil {
			t.Fatal(err)
		}
		gnB, err := b.apply(accB, wB+ws2, 1e-2)
		if err != nil {
			t.Fatal(err)
		}
		if ws != ws2 || math.Abs(gnA-gnB) > 1e-6*math.Max(1, gnB) {
			t.Errorf("accumulate %v: weight %v vs %v, grad norm %v vs %v", accum, ws, ws2, gnA, gnB)
		}
		ca, err := a.Checkpoint()
		if err != nil {
			t.Fatal(err)
		}
		cb, err := b.Checkpoint()
		if err != nil {
			t.Fatal(err)
		}
		for name, ta := range ca.Tensors {
			for i, v := range ta.Data {
				if d := math.Abs(float64(v - cb.Tensors[name].Data[i])); d > 1e-7 {
					t.Fatalf("accumulate %v: %s[%d] differs by %g", accum, name, i, d)
				}
			}
		}
		a.Close()
		b.Close()
	}
}

func TestPackingTrains(t *testing.T) {
	_, ck, tok := tinyBase(t)
	exs := shortTask(t, tok, 16)
	cfg := testConfig("")
	cfg.NumEpochs, cfg.PerDeviceBatchSize, cfg.LearningRate, cfg.WarmupRatio = 4, 2, 1e-2, 0
	cfg.GradientAccumulationSteps = 1
	tr, err := New(cfg, ck, WithMaxSeqLen(48), WithPacking())
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	before, err := tr.Evaluate(context.Background(), exs)
	if err != nil {
		t.Fatal(err)
	}
	res, err := tr.Train(context.Background(), exs)
	if err != nil {
		t.Fatal(err)
	}
	rows := len(PackExamples(exs, 48))
	if rows >= len(exs) {
		t.Fatalf("packing made %d rows of %d examples", rows, len(exs))
	}
	if want := cfg.NumEpochs * ((rows + 1) / 2); res.GlobalStep != want {
		t.Errorf("%d steps, want %d (packed rows %d)", res.GlobalStep, want, rows)
	}
	after, err := tr.Evaluate(context.Background(), exs)
	if err != nil {
		t.Fatal(err)
	}
	if !(after.Loss < before.Loss-0.5) {
		t.Errorf("eval loss %v -> %v: packed training did not learn", before.Loss, after.Loss)
	}
}

// Batches of many lengths compile one fused step graph per bucket length
// (on the graph engine).
func TestFewGraphsCompiled(t *testing.T) {
	_, ck, _ := tinyBase(t)
	cfg := testConfig("")
	cfg.NumEpochs, cfg.PerDeviceBatchSize, cfg.GradientAccumulationSteps = 1, 1, 1
	tr, err := New(cfg, ck, WithMaxSeqLen(64), WithEngine(schemas.TrainEngineGraph))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	var exs []Example
	for n := 3; n <= 64; n += 3 {
		e := Example{Tokens: make([]int32, n), Weights: make([]float32, n)}
		for i := range e.Tokens {
			e.Tokens[i], e.Weights[i] = int32(i%200), 1
		}
		exs = append(exs, e)
	}
	if _, err := tr.Train(context.Background(), exs); err != nil {
		t.Fatal(err)
	}
	lens := map[int]bool{}
	for k := range tr.graphs {
		if k.kind != "step" {
			t.Errorf("graph %s compiled: want only fused steps with accumulation 1", k.kind)
		}
		lens[k.cols] = true
	}
	if len(lens) != 4 || !lens[16] || !lens[32] || !lens[48] || !lens[64] {
		t.Errorf("%d examples of 3..63 tokens compiled lengths %v, want 16, 32, 48, 64", len(exs), lens)
	}
}
