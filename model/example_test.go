package model_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"

	"github.com/largeforge/largeforge/model"
	"github.com/largeforge/largeforge/model/checkpoint"
)

// exampleCheckpoint is the "tiny" preset with random weights (a real
// program calls model.Load on a checkpoint directory).
func exampleCheckpoint() *checkpoint.Checkpoint {
	cfg, err := checkpoint.PresetConfig("tiny")
	if err != nil {
		panic(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	tensors := map[string]*checkpoint.Tensor{}
	for name, shape := range checkpoint.ExpectedTensors(cfg) {
		n := 1
		for _, d := range shape {
			n *= d
		}
		t := &checkpoint.Tensor{Shape: shape, Data: make([]float32, n)}
		for i := range t.Data {
			if strings.HasSuffix(name, "norm.weight") {
				t.Data[i] = 1
			} else {
				t.Data[i] = float32(rng.NormFloat64() * 0.02)
			}
		}
		tensors[name] = t
	}
	return &checkpoint.Checkpoint{Config: cfg, Tensors: tensors}
}

func ExampleModel_Generate() {
	m, err := model.New(exampleCheckpoint())
	if err != nil {
		panic(err)
	}
	defer m.Close()
	res, err := m.Generate(context.Background(), []model.GenerateRequest{
		{PromptIDs: []int{256, 72, 105}, Params: model.SamplingParams{MaxTokens: 8, EOS: []int{}}},
		{PromptIDs: []int{256}, Params: model.SamplingParams{MaxTokens: 4, Temperature: 0.8, TopP: 0.9, Seed: 42, EOS: []int{}}},
	})
	if err != nil {
		panic(err)
	}
	for _, r := range res {
		fmt.Println(len(r.IDs), r.FinishReason, r.PromptTokens, r.CompletionTokens)
	}
	// Output:
	// 8 length 3 8
	// 4 length 1 4
}

func ExampleModel_Score() {
	m, err := model.New(exampleCheckpoint())
	if err != nil {
		panic(err)
	}
	defer m.Close()
	res, err := m.Score(context.Background(), []model.ScoreRequest{
		{PromptIDs: []int{256, 72}, CompletionIDs: []int{105, 33}}, // chosen
		{PromptIDs: []int{256, 72}, CompletionIDs: []int{0, 0}},    // rejected
	})
	if err != nil {
		panic(err)
	}
	fmt.Println(res[0].Tokens, len(res[0].TokenLogprobs), res[0].SumLogprob < 0, res[0].Perplexity > 1)
	_ = model.DPOMargin(res[0], res[1])
	// Output:
	// 2 2 true true
}

func ExampleBatcher() {
	m, err := model.New(exampleCheckpoint())
	if err != nil {
		panic(err)
	}
	defer m.Close()
	b, err := model.NewBatcher(m, 8)
	if err != nil {
		panic(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- b.Run(ctx) }()

	streamed := 0
	res, err := b.Submit(context.Background(), model.GenerateRequest{
		PromptIDs: []int{256, 72},
		Params:    model.SamplingParams{MaxTokens: 5, EOS: []int{}},
	}, func(id int) { streamed++ })
	if err != nil {
		panic(err)
	}
	fmt.Println(len(res.IDs), streamed, res.FinishReason)
	stop()
	fmt.Println(<-done)
	// Output:
	// 5 5 length
	// <nil>
}
