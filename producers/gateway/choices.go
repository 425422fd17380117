package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/schemas"
)

// choiceRequests are the requests of req's choices: opts.N of each prompt
// (req's, or each of opts.Prompts), choice i*N+j the j-th of prompt i, with
// seed+j when the request has a seed (so that they differ, and a prompt's
// choices are those of that prompt sent alone).
func choiceRequests(req schemas.CompletionRequest, opts Options) []schemas.CompletionRequest {
	prompts := opts.Prompts
	if prompts == nil {
		prompts = []string{req.Prompt}
	}
	out := make([]schemas.CompletionRequest, 0, len(prompts)*opts.N)
	for _, p := range prompts {
		for j := range opts.N {
			r := req
			if !req.IsChat() {
				r.Prompt = p
			}
			if opts.N > 1 && req.Seed != nil {
				seed := *req.Seed + int64(j)
				r.Seed = &seed
			}
			out = append(out, r)
		}
	}
	return out
}

// generate runs the requests of the choices (choiceRequests) on the workers
// at once, each its own RPC like call, and returns their final replies in
// choice order. Streamed text goes to sse under each choice's index. The
// first failure cancels the others and is returned.
func (g *Gateway) generate(ctx context.Context, call pipeline.RPCCall, reqs []schemas.CompletionRequest, sse *sseWriter) ([][]byte, error) {
	finals := make([][]byte, len(reqs))
	errs := make([]error, len(reqs))
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for i, r := range reqs {
		c := call
		c.Data, _ = json.Marshal(r)
		var onChunk func([]byte) error
		if sse != nil {
			onChunk = func(text []byte) error { return sse.chunk(i, text) }
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if finals[i], errs[i] = g.callWorker(cctx, c, onChunk); errs[i] != nil {
				cancel()
			}
		}()
	}
	wg.Wait()
	for _, err := range errs { // the cause, not a sibling cancelled by it
		if err != nil && !errors.Is(err, context.Canceled) {
			return nil, err
		}
	}
	return finals, errors.Join(errs...)
}

// callWorker makes one RPC, retrying for up to WorkerWait while no worker
// answers.
func (g *Gateway) callWorker(ctx context.Context, call pipeline.RPCCall, onChunk func([]byte) error) ([]byte, error) {
	deadline := time.Now().Add(g.cfg.WorkerWait)
	for {
		final, err := g.bus.StreamRPC(ctx, call, nil, onChunk)
		if !errors.Is(err, pipeline.ErrNoResponders) || time.Now().After(deadline) {
			return final, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// mergeChoices makes one response of the workers' replies: reply i's choice
// is choice i; each prompt (n replies in a row) is counted once, the
// completions of all.
func mergeChoices(finals [][]byte, n int) (schemas.CompletionResponse, error) {
	var resp schemas.CompletionResponse
	for i, f := range finals {
		var r schemas.CompletionResponse
		if err := json.Unmarshal(f, &r); err != nil {
			return resp, fmt.Errorf("choice %d: %w", i, err)
		}
		if len(r.Choices) != 1 {
			return resp, fmt.Errorf("choice %d: %d choices in a worker's reply, want 1", i, len(r.Choices))
		}
		if i == 0 {
			resp = r
			resp.Choices = make([]schemas.Choice, 0, len(finals))
		} else {
			resp.Usage.CompletionTokens += r.Usage.CompletionTokens
			if i%max(n, 1) == 0 {
				resp.Usage.PromptTokens += r.Usage.PromptTokens
			}
		}
		ch := r.Choices[0]
		ch.Index = i
		resp.Choices = append(resp.Choices, ch)
	}
	resp.Usage.TotalTokens = resp.Usage.PromptTokens + resp.Usage.CompletionTokens
	return resp, nil
}
