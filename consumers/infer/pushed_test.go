package infer_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/largeforge/largeforge/consumers/infer"
	"github.com/largeforge/largeforge/internal/testenv"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/routing"
	"github.com/largeforge/largeforge/schemas"
	"github.com/largeforge/largeforge/storage/modelstore"
)

// A worker serving a named set of pushed models serves each once it is
// pushed, without a restart: a name pushed before it started and one
// pushed while it runs both answer completions under their names; a
// pushed name outside the set is not served.
func TestServePushed(t *testing.T) {
	dir := filepath.Dir(testenv.SharedFile(t, "models/stories260K/model.safetensors"))
	_, bus := pipelinetest.StartBus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ms, err := modelstore.New(ctx, bus)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"early", "other"} {
		if _, err := ms.Push(ctx, name, dir); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := infer.ServePushed(ctx, bus, infer.PushedConfig{All: true, Names: []string{"x"}, Cache: t.TempDir()}, infer.Config{}, pipelinetest.Logger(t), nil); err == nil {
		t.Error("both All and Names accepted")
	}
	sctx, stop := context.WithCancel(ctx)
	p, err := infer.ServePushed(sctx, bus, infer.PushedConfig{Names: []string{"early", "late"}, Cache: t.TempDir(), Every: 50 * time.Millisecond},
		infer.Config{Slots: 1, HeartbeatEvery: time.Second, MaxWait: 50 * time.Millisecond, WorkerID: "pw"}, pipelinetest.Logger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		stop()
		if err := p.Wait(); err != nil {
			t.Errorf("pushed: %v", err)
		}
	}()
	wkv, err := bus.KV(ctx, pipeline.BucketWorkers)
	if err != nil {
		t.Fatal(err)
	}
	live := func(want ...string) {
		t.Helper()
		pipelinetest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
			l, err := routing.LiveWorkers(ctx, wkv)
			if err != nil {
				return err
			}
			for _, n := range want {
				if l[n] == 0 {
					return fmt.Errorf("%s not live: %v", n, l)
				}
			}
			return nil
		})
	}
	live("early")
	if _, err := ms.Push(ctx, "late", dir); err != nil {
		t.Fatal(err)
	}
	live("early", "late")
	for _, name := range []string{"early", "late"} {
		data, _ := json.Marshal(schemas.CompletionRequest{Model: name, Prompt: "Once upon a time", MaxTokens: 4, TopP: 1})
		final, err := bus.StreamRPC(ctx, pipeline.RPCCall{Subject: pipeline.RPCSubject(name), Data: data}, nil, nil)
		var resp schemas.CompletionResponse
		if err != nil || json.Unmarshal(final, &resp) != nil || resp.Model != name || resp.Usage.CompletionTokens == 0 {
			t.Errorf("%s: %s %v", name, final, err)
		}
	}
	if got := p.Served(); !slices.Equal(got, []string{"early", "late"}) {
		t.Errorf("served %v, want early and late (not other)", got)
	}
}
