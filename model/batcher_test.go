package model

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"
)

func startBatcher(t *testing.T, m *Model, slots int) *Batcher {
	t.Helper()
	b, err := NewBatcher(m, slots)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return b
}

// TestBatcherStaggered submits requests while others are decoding (each
// after the previous one has produced a few tokens) and expects the greedy
// outputs of Generate; with 2 slots the third request waits for a free slot.
func TestBatcherStaggered(t *testing.T) {
	m, ref := storiesModel(t)
	b := startBatcher(t, m, 2)
	ctx := context.Background()
	reqs := []GenerateRequest{
		{PromptIDs: ref.Prompts[0].PromptIDs, Params: greedy(40)},
		{PromptIDs: ref.Prompts[1].PromptIDs, Params: greedy(30)},
		{PromptIDs: []int{1}, Params: greedy(120)},
		{PromptIDs: ref.Prompts[1].PromptIDs[:3], Params: greedy(10)},
	}
	want, err := m.Generate(ctx, reqs)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]GenerateResult, len(reqs))
	streamed := make([][]int, len(reqs))
	errs := make([]error, len(reqs))
	var wg sync.WaitGroup
	var submit func(i int)
	submit = func(i int) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i], errs[i] = b.Submit(ctx, reqs[i], func(id int) {
				streamed[i] = append(streamed[i], id)
				if len(streamed[i]) == 5 && i+1 < len(reqs) {
					submit(i + 1)
				}
			})
		}()
	}
	submit(0)
	wg.Wait()
	for i := range reqs {
		if errs[i] != nil {
			t.Fatalf("request %d: %v", i, errs[i])
		}
		if !slices.Equal(got[i].IDs, want[i].IDs) || got[i].FinishReason != want[i].FinishReason || got[i].CompletionTokens != want[i].CompletionTokens {
			t.Errorf("request %d: batcher %v (%s), Generate %v (%s)", i, got[i].IDs, got[i].FinishReason, want[i].IDs, want[i].FinishReason)
		}
		if !slices.Equal(streamed[i], got[i].IDs) {
			t.Errorf("request %d: streamed %v, result %v", i, streamed[i], got[i].IDs)
		}
	}
	if !slices.Equal(got[2].IDs, ref.FromBOS.IDs[:120]) {
		t.Errorf("from BOS: got %v", got[2].IDs)
	}
}

// TestBatcherCancel cancels a request mid-decode: Submit returns the
// context's error and the slot is free for the next request.
func TestBatcherCancel(t *testing.T) {
	m, ref := storiesModel(t)
	b := startBatcher(t, m, 1)
	ctx, cancel := context.WithCancel(context.Background())
	n := 0
	_, err := b.Submit(ctx, GenerateRequest{PromptIDs: []int{1}, Params: greedy(500)}, func(int) {
		if n++; n == 3 {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Submit: err = %v, want context.Canceled", err)
	}
	p := ref.Prompts[0]
	done := make(chan struct{})
	var res GenerateResult
	go func() {
		defer close(done)
		res, err = b.Submit(context.Background(), GenerateRequest{PromptIDs: p.PromptIDs, Params: greedy(10)}, nil)
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the slot of the cancelled request was not freed")
	}
	if err != nil || !slices.Equal(res.IDs, p.GreedyIDs[:10]) {
		t.Errorf("after cancel: %v %v", res.IDs, err)
	}
}

func TestBatcherClosed(t *testing.T) {
	m, _ := storiesModel(t)
	b, err := NewBatcher(m, 1)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := b.Run(ctx); err != nil {
		t.Fatalf("Run after cancel: %v", err)
	}
	if _, err := b.Submit(context.Background(), GenerateRequest{PromptIDs: []int{1}}, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Submit after Run: err = %v, want ErrClosed", err)
	}
	if err := b.Run(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("second Run: err = %v, want ErrClosed", err)
	}
}

func TestNewBatcherInvalid(t *testing.T) {
	m, _ := storiesModel(t)
	tests := []struct {
		name    string
		slots   int
		opts    []Option
		wantErr error
	}{
		{"zero slots", 0, nil, ErrInvalidOption},
		{"bad option", 4, []Option{WithMaxBatch(0)}, ErrInvalidOption},
		{"ok", 4, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewBatcher(m, tt.slots, tt.opts...)
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
		})
	}
}
