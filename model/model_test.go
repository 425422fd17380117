package model

import (
	"bytes"
	"context"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/largeforge/largeforge/model/checkpoint"
)

// tinyCheckpoint is the "tiny" preset with random weights.
func tinyCheckpoint(t testing.TB) *checkpoint.Checkpoint {
	t.Helper()
	cfg, err := checkpoint.PresetConfig("tiny")
	if err != nil {
		t.Fatal(err)
	}
	return &checkpoint.Checkpoint{Config: cfg, Tensors: randomTensors(cfg, 1)}
}

func TestNewInvalid(t *testing.T) {
	missing := tinyCheckpoint(t)
	delete(missing.Tensors, "model.layers.2.mlp.up_proj.weight")
	badShape := tinyCheckpoint(t)
	badShape.Tensors["model.norm.weight"] = &checkpoint.Tensor{Shape: []int{3}, Data: make([]float32, 3)}
	badCfg := tinyCheckpoint(t)
	badCfg.Config.NumKVHeads = 3
	tests := []struct {
		name    string
		ck      *checkpoint.Checkpoint
		opts    []Option
		wantErr error
	}{
		{"nil checkpoint", nil, nil, ErrWeights},
		{"missing tensor", missing, nil, ErrWeights},
		{"bad shape", badShape, nil, ErrWeights},
		{"bad config", badCfg, nil, ErrWeights},
		{"unknown backend", tinyCheckpoint(t), []Option{WithBackend("nosuch")}, ErrBackend},
		{"max batch", tinyCheckpoint(t), []Option{WithMaxBatch(0)}, ErrInvalidOption},
		{"max seq len", tinyCheckpoint(t), []Option{WithMaxSeqLen(1)}, ErrInvalidOption},
		{"ok", tinyCheckpoint(t), []Option{WithBackend("go"), WithMaxBatch(2), WithMaxSeqLen(64)}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := New(tt.ck, tt.opts...)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if m != nil {
				if err := m.Close(); err != nil {
					t.Error(err)
				}
			}
		})
	}
}

func TestBackendFromEnv(t *testing.T) {
	t.Setenv(BackendEnv, "nosuch:thing")
	if _, err := New(tinyCheckpoint(t)); !errors.Is(err, ErrBackend) || !strings.Contains(err.Error(), "nosuch") {
		t.Errorf("err = %v, want ErrBackend naming nosuch", err)
	}
	t.Setenv(BackendEnv, "go")
	m, err := New(tinyCheckpoint(t))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Backend() != "go" {
		t.Errorf("backend %q, want go", m.Backend())
	}
}

// TestBucketedCompilation runs several batch shapes and checks that graphs
// are compiled per bucket only, and logged.
func TestBucketedCompilation(t *testing.T) {
	var logs bytes.Buffer
	m, err := New(tinyCheckpoint(t), WithLogger(zerolog.New(&logs)), WithMaxBatch(4), WithEngine(EngineGraph))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if !strings.Contains(logs.String(), `"backend":"`+DefaultBackend+`"`) {
		t.Errorf("the backend is not logged: %s", logs.String())
	}
	ctx := context.Background()
	for n := 1; n <= 6; n++ {
		reqs := make([]GenerateRequest, n)
		for i := range reqs {
			reqs[i] = GenerateRequest{PromptIDs: make([]int, 3+i), Params: SamplingParams{MaxTokens: 4 + i%3, EOS: []int{}}}
		}
		res, err := m.Generate(ctx, reqs)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range res {
			if len(r.IDs) != 4+i%3 || r.FinishReason != FinishLength {
				t.Errorf("n=%d row %d: %d ids (%s)", n, i, len(r.IDs), r.FinishReason)
			}
		}
	}
	// Batches 1, 2, 4 (6 = 4 + 2), prompts bucketed to 8 and caches to 16:
	// one prefill, insert and decode graph per batch bucket.
	m.mu.Lock()
	kinds := map[string]int{}
	for k := range m.graphs {
		kinds[k.kind]++
	}
	m.mu.Unlock()
	for _, kind := range []string{"prefill", "insert", "decode"} {
		if kinds[kind] != 3 {
			t.Errorf("%d %s graphs compiled, want 3 (%v)", kinds[kind], kind, kinds)
		}
	}
	if got := strings.Count(logs.String(), "compiled graph"); got != 9 {
		t.Errorf("%d compilations logged, want 9", got)
	}
}

func TestScoreBatchAndDPO(t *testing.T) {
	m, ref := storiesModel(t)
	ctx := context.Background()
	p := ref.Prompts[0]
	chosen := ScoreRequest{PromptIDs: p.PromptIDs, CompletionIDs: p.GreedyIDs[:10]}
	rejected := ScoreRequest{PromptIDs: p.PromptIDs, CompletionIDs: []int{400, 401, 402, 403, 404, 405, 406, 407, 408, 409}}
	noPrompt := ScoreRequest{CompletionIDs: append([]int{}, p.PromptIDs...)}
	res, err := m.Score(ctx, []ScoreRequest{chosen, rejected, noPrompt})
	if err != nil {
		t.Fatal(err)
	}
	alone, err := m.Score(ctx, []ScoreRequest{chosen})
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(alone[0].SumLogprob-res[0].SumLogprob) > 1e-4 {
		t.Errorf("chosen alone %g, in a batch %g", alone[0].SumLogprob, res[0].SumLogprob)
	}
	if margin := DPOMargin(res[0], res[1]); !(margin > 0) || margin != res[0].SumLogprob-res[1].SumLogprob {
		t.Errorf("DPO margin %g: the greedy continuation should beat arbitrary tokens", margin)
	}
	if res[2].Tokens != len(p.PromptIDs)-1 {
		t.Errorf("empty prompt: %d tokens counted, want %d", res[2].Tokens, len(p.PromptIDs)-1)
	}
	// Per-token log-probabilities agree with the full logits.
	logits, err := m.Logits(ctx, [][]int{append(append([]int{}, p.PromptIDs...), p.GreedyIDs[:10]...)})
	if err != nil {
		t.Fatal(err)
	}
	for j, lp := range res[0].TokenLogprobs {
		row := logits[0][len(p.PromptIDs)-1+j]
		if want := logSoftmaxAt(row, p.GreedyIDs[j]); math.Abs(lp-want) > 1e-4 {
			t.Errorf("token %d: logprob %g, from logits %g", j, lp, want)
		}
	}
}

func logSoftmaxAt(row []float32, id int) float64 {
	mx := math.Inf(-1)
	for _, x := range row {
		mx = math.Max(mx, float64(x))
	}
	s := 0.0
	for _, x := range row {
		s += math.Exp(float64(x) - mx)
	}
	return float64(row[id]) - mx - math.Log(s)
}

func TestScoreInvalid(t *testing.T) {
	m, _ := storiesModel(t)
	tests := []struct {
		name    string
		req     ScoreRequest
		wantErr error
	}{
		{"one token", ScoreRequest{CompletionIDs: []int{1}}, ErrInvalidRequest},
		{"no completion", ScoreRequest{PromptIDs: []int{1, 2, 3}}, ErrInvalidRequest},
		{"bad id", ScoreRequest{PromptIDs: []int{1}, CompletionIDs: []int{9999}}, ErrInvalidRequest},
		{"too long", ScoreRequest{PromptIDs: []int{1}, CompletionIDs: make([]int, 5000)}, ErrTooLong},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := m.Score(context.Background(), []ScoreRequest{tt.req}); !errors.Is(err, tt.wantErr) {
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestClosedModel(t *testing.T) {
	m, err := New(tinyCheckpoint(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Generate(context.Background(), []GenerateRequest{{PromptIDs: []int{1}}}); !errors.Is(err, ErrClosed) {
		t.Errorf("Generate after Close: %v, want ErrClosed", err)
	}
	if err := m.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
