package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/schemas"
)

// TestExpertsList lists the experts of a file and of lf_experts, with the
// live workers of lf_workers.
func TestExpertsList(t *testing.T) {
	e, bus := pipelinetest.StartBus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	file := filepath.Join(t.TempDir(), "experts.yaml")
	if err := os.WriteFile(file, []byte(`experts:
  - name: code
    model_path: models/code
    keywords: [python, function]
    priority: 2
  - name: stories
    model_path: models/stories
    domains: [fiction]
`), 0o644); err != nil {
		t.Fatal(err)
	}
	ekv, err := bus.KV(ctx, pipeline.BucketExperts)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{
		"stories": `{"name":"stories","model_path":"models/stories-v2","keywords":["story"]}`,
		"math":    `{"name":"math","model_path":"models/math","priority":1}`,
		"broken":  `{"name":"other"}`,
	} {
		if _, err := ekv.Put(ctx, k, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	wkv, err := bus.KV(ctx, pipeline.BucketWorkers)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().Unix()
	for id, models := range map[string][]string{"w1": {"code", "stories"}, "w2": {"code"}} {
		hb, _ := json.Marshal(schemas.Heartbeat{ID: id, Role: schemas.WorkerInfer, Models: models, StartedAt: now, UpdatedAt: now})
		if _, err := wkv.Put(ctx, "infer."+id, hb); err != nil {
			t.Fatal(err)
		}
	}
	nats := "--nats=" + e.ClientURL()

	out, err := runCLI(t, ctx, nats, "--log-level=error", "experts", "list", "--experts", file)
	if err != nil {
		t.Fatalf("experts list: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	want := [][]string{
		{"NAME", "MODEL", "PRIORITY", "LIVE", "SOURCE", "KEYWORDS", "DOMAINS"},
		{"code", "models/code", "2", "2", "file", "python,function", "-"},
		{"math", "models/math", "1", "0", "kv", "-", "-"},
		{"stories", "models/stories-v2", "0", "1", "file+kv", "story", "-"},
	}
	if len(lines) != len(want) {
		t.Fatalf("output:\n%s", out)
	}
	for i, w := range want {
		if got := strings.Fields(lines[i]); strings.Join(got, " ") != strings.Join(w, " ") {
			t.Errorf("line %d: %q, want %q", i, got, w)
		}
	}

	out, err = runCLI(t, ctx, nats, "--log-level=error", "experts", "list", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var rows []ExpertRow
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(rows) != 2 || rows[0].Name != "math" || rows[1].Name != "stories" || rows[1].LiveWorkers != 1 || rows[1].Source != "kv" {
		t.Errorf("json rows %+v", rows)
	}

	out, err = runCLI(t, ctx, "experts", "list", "--experts", file, "--offline")
	if err != nil || !strings.Contains(out, "stories  models/stories  0         ?") {
		t.Errorf("offline: %v\n%s", err, out)
	}
}
