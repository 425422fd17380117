package infer_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/largeforge/largeforge/consumers/infer"
	"github.com/largeforge/largeforge/model"
	"github.com/largeforge/largeforge/model/checkpoint"
	"github.com/largeforge/largeforge/model/loratest"
	"github.com/largeforge/largeforge/model/train"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/schemas"
)

// TestServeAdaptersUnmerged: one worker loads the base once and serves two
// adapters unmerged as model ids of their own (in its heartbeat's models):
// each answers, greedily, as the model with that adapter merged, while the
// cache, bounded to one adapter's bytes, unloads and reloads them; an
// adapter that does not fit its base stops the worker before it serves.
func TestServeAdaptersUnmerged(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base")
	if err := checkpoint.Init("tiny", 3, base); err != nil {
		t.Fatal(err)
	}
	cfg, err := checkpoint.LoadConfig(base)
	if err != nil {
		t.Fatal(err)
	}
	models := map[string]string{"base": base}
	var specs []infer.AdapterSpec
	for i, mods := range [][]string{{"q_proj", "v_proj"}, {"o_proj", "gate_proj", "down_proj"}} {
		ad, merged := filepath.Join(dir, fmt.Sprint("ad", i)), filepath.Join(dir, fmt.Sprint("merged", i))
		if err := loratest.Write(cfg, ad, loratest.Spec{R: 4, Alpha: 8, Modules: mods, Seed: uint64(i + 1)}); err != nil {
			t.Fatal(err)
		}
		if err := train.MergeAdapter(base, ad, merged); err != nil {
			t.Fatal(err)
		}
		models[fmt.Sprint("merged", i)] = merged
		specs = append(specs, infer.AdapterSpec{Name: fmt.Sprint("tuned", i), Base: "base", Dir: ad})
	}
	_, bus := pipelinetest.StartBus(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Room for one adapter (tuned0 is the smaller: q and v only).
	w, err := infer.StartDirsServingAdapters(ctx, bus, models, nil, specs, infer.Config{Slots: 4, Fetchers: 1, AdapterBytes: 1, WorkerID: "wa"}, pipelinetest.Logger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = w.Wait() }()
	if got := w.Models(); !slices.Contains(got, "tuned0") || !slices.Contains(got, "tuned1") {
		t.Errorf("served models %v, want the adapters among them", got)
	}
	// The heartbeat names the five ids but counts the slots of the three
	// batchers: the adapters run in their base's.
	hb := heartbeatOf(t, bus, "wa")
	if len(hb.Models) != 5 || hb.Capacity != 3*4 {
		t.Errorf("heartbeat %+v: want 5 models and the capacity of 3 batchers of 4 slots", hb)
	}

	complete := func(name, prompt string) string { return completeRPC(ctx, t, bus, name, prompt) }
	for _, p := range []string{"Once upon a time", "Colour 3?"} {
		plain := complete("base", p)
		for i := range specs {
			got, want := complete(fmt.Sprint("tuned", i), p), complete(fmt.Sprint("merged", i), p)
			if got != want {
				t.Errorf("prompt %q: tuned%d (unmerged) %q, merged %q", p, i, got, want)
			}
			if got == plain {
				t.Errorf("prompt %q: tuned%d answers as the base: the adapter was not applied", p, i)
			}
		}
	}
	if st := w.Adapters.Stats(); len(st.Held) != 1 || st.Evictions < 3 || st.Loads < 4 {
		t.Errorf("adapter cache of one adapter's room: %+v, want one held and each asked for in turn reloaded", st)
	}

	// A mismatched adapter: refused before anything is served, naming the file and tensor.
	other := cfg
	other.HiddenSize, other.NumHeads, other.NumKVHeads = 32, 4, 2
	bad := filepath.Join(dir, "bad")
	if err := loratest.Write(other, bad, loratest.Spec{R: 4, Alpha: 8, Modules: []string{"k_proj"}}); err != nil {
		t.Fatal(err)
	}
	_, err = infer.StartDirsServingAdapters(ctx, bus, map[string]string{"b": base}, nil, []infer.AdapterSpec{{Name: "x", Base: "b", Dir: bad}}, infer.Config{}, pipelinetest.Logger(t), nil)
	if !errors.Is(err, model.ErrAdapter) || !strings.Contains(err.Error(), "model.layers.0.self_attn.k_proj.lora_A.weight") || !strings.Contains(err.Error(), bad) {
		t.Errorf("mismatched adapter: %v", err)
	}
	if _, err := infer.StartDirsServingAdapters(ctx, bus, map[string]string{"b": base}, nil, []infer.AdapterSpec{{Name: "x", Base: "nope", Dir: bad}}, infer.Config{}, pipelinetest.Logger(t), nil); !errors.Is(err, infer.ErrInvalidOption) {
		t.Errorf("adapter on a model not served: %v", err)
	}
}

// heartbeatOf waits for the lf_workers heartbeat of worker id and returns it.
func heartbeatOf(t *testing.T, bus *pipeline.Bus, id string) schemas.Heartbeat {
	t.Helper()
	kv, err := bus.KV(context.Background(), pipeline.BucketWorkers)
	if err != nil {
		t.Fatal(err)
	}
	var hb schemas.Heartbeat
	pipelinetest.CheckFor(t, time.Minute, 10*time.Millisecond, func() error {
		e, err := kv.Get(context.Background(), infer.HeartbeatKey(id))
		if err != nil {
			return fmt.Errorf("heartbeat of %s: %w", id, err)
		}
		return json.Unmarshal(e.Value, &hb)
	})
	return hb
}
