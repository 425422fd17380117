package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/largeforge/largeforge/dataset"
	"github.com/largeforge/largeforge/internal/testenv"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/storage"
)

// TestUpOnEveryNode: largeforge up --config on each node of a three-node
// loopback cluster (each its own store and data directory, started in
// turn: none waits for the others to serve) applies the topology with
// three replicas and runs a dataset and a results sink on every node; an
// ingest and a batch job through the cluster store each record and each
// result once, read back through the bus.
func TestUpOnEveryNode(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs three nodes")
	}
	model := filepath.Dir(testenv.SharedFile(t, "models/stories260K/model.safetensors"))
	bin := buildBinary(t)
	nodes := pipelinetest.ClusterConfs(t, 3, "")
	urls := (&pipelinetest.Cluster{Nodes: nodes}).URLs()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var ups []*proc
	for i, n := range nodes {
		args := []string{"up", "--config", n.ConfFile, "--data-dir", filepath.Join(t.TempDir(), n.Name),
			"--metrics-addr", "127.0.0.1:0", "--log-format", "json", "--log-level", "info"}
		if i == 0 {
			args = append(args, "--model", "stories="+model)
		}
		ups = append(ups, start(t, bin, nil, args...))
	}
	for i, up := range ups {
		pipelinetest.CheckFor(t, time.Minute, 100*time.Millisecond, func() error {
			if !strings.Contains(up.out.String(), "largeforge is up") {
				return fmt.Errorf("%s is not up:\n%s\nlf-2:\n%s\nlf-3:\n%s", nodes[i].Name, up.out, ups[1].out, ups[2].out)
			}
			return nil
		})
	}
	bus, err := pipeline.Connect(ctx, pipeline.ConnConfig{URL: urls, Name: t.Name()}, pipelinetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	for _, name := range pipeline.DefaultTopology(3).StreamNames() {
		s, err := bus.JetStream().Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if r := s.CachedInfo().Config.Replicas; r != 3 {
			t.Errorf("%s has %d replicas, want 3", name, r)
		}
	}

	lf := func(args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, bin, append([]string{"--nats", urls, "--log-level", "warning"}, args...)...)
		cmd.Dir = t.TempDir()
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("largeforge %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.String())
		}
		return string(out)
	}
	dir := t.TempDir()
	const records, requests = 300, 24
	var alpaca, batch strings.Builder
	for i := range records {
		fmt.Fprintf(&alpaca, `{"instruction":"Question %d?","input":"","output":"Answer %d."}`+"\n", i, i)
	}
	var customIDs []string
	for i := range requests {
		id := fmt.Sprintf("r%02d", i)
		customIDs = append(customIDs, id)
		fmt.Fprintf(&batch, `{"custom_id":%q,"prompt":"Once upon a time %d","max_tokens":3,"temperature":0}`+"\n", id, i)
	}
	src, jobFile := filepath.Join(dir, "qa.jsonl"), filepath.Join(dir, "batch.jsonl")
	if err := os.WriteFile(src, []byte(alpaca.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(jobFile, []byte(batch.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := lf("ingest", "--dataset", "qa", "--format", "alpaca", "--wait", "2m", src); !strings.Contains(out, "accepted") {
		t.Fatalf("ingest: %q", out)
	}
	store, err := storage.OpenObjects(ctx, bus, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	reader, err := dataset.NewRecords(store, "qa")
	if err != nil {
		t.Fatal(err)
	}
	pipelinetest.CheckFor(t, time.Minute, 200*time.Millisecond, func() error {
		recs, err := reader.ReadRecords(ctx)
		if err != nil {
			return err
		}
		ids := recordIDs(recs)
		slices.Sort(ids)
		if distinct := len(slices.Compact(ids)); distinct != len(recs) || len(recs) != records {
			return fmt.Errorf("%d records (%d distinct) in the parts, want %d once each", len(recs), distinct, records)
		}
		return nil
	})

	job := strings.TrimSpace(lf("submit", jobFile, "--model", "stories"))
	lf("jobs", "wait", job, "--progress", "off")
	out := filepath.Join(dir, "out.jsonl")
	lf("jobs", "results", job, "-o", out)
	got := customIDsOf(t, out)
	slices.Sort(got)
	if !slices.Equal(got, customIDs) {
		t.Fatalf("results: custom_ids %v, want each of %v once", got, customIDs)
	}
	for i, up := range ups {
		if n := strings.Count(up.out.String(), "did not apply in time"); n > 0 {
			t.Logf("%s retried the topology %d times", nodes[i].Name, n)
		}
	}
}

// replicasOf is the replica count of every stream behind the topology.
func replicasOf(t *testing.T, ctx context.Context, bus *pipeline.Bus) map[int][]string {
	t.Helper()
	got := map[int][]string{}
	for _, name := range pipeline.DefaultTopology(1).StreamNames() {
		s, err := bus.JetStream().Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		r := s.CachedInfo().Config.Replicas
		got[r] = append(got[r], name)
	}
	return got
}

// TestTopologyApplyReplicas: on a cluster, topology apply declares three
// replicas; --replicas 1 sets one exactly; without --replicas it raises
// them to three again, as up on a node of the grown cluster does, and up's
// count never lowers them.
func TestTopologyApplyReplicas(t *testing.T) {
	c := pipelinetest.StartCluster(t, 3, "")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bus, err := pipeline.Connect(ctx, pipeline.ConnConfig{URL: c.URLs(), Name: t.Name()}, pipelinetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	want := func(replicas int) {
		t.Helper()
		got := replicasOf(t, ctx, bus)
		if len(got) != 1 || len(got[replicas]) == 0 {
			t.Fatalf("replicas %v, want %d for every stream", got, replicas)
		}
	}
	apply := func(args ...string) {
		t.Helper()
		out, err := runCLI(t, ctx, append([]string{"--nats", c.URLs(), "--log-level", "error", "topology", "apply"}, args...)...)
		if err != nil || !strings.Contains(out, "topology applied") {
			t.Fatalf("topology apply %v: %v %q", args, err, out)
		}
	}
	apply()
	want(3)
	apply("--replicas", "1")
	want(1)
	// up on a node that sees three servers online raises them in place.
	topo, err := upTopology(ctx, c.Nodes[1].Server(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := applyUpTopology(ctx, bus, topo, pipelinetest.Logger(t)); err != nil {
		t.Fatal(err)
	}
	want(3)
	// A count guessed from fewer servers online keeps them.
	guessed := pipeline.DefaultTopology(1)
	guessed.RaiseOnly = true
	if err := applyUpTopology(ctx, bus, guessed, pipelinetest.Logger(t)); err != nil {
		t.Fatal(err)
	}
	want(3)
	apply("--replicas", "1")
	apply()
	want(3)
}

// TestUpConfigUnknownKey: up --config with a key nats-server does not know
// exits naming the file and the key.
func TestUpConfigUnknownKey(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "node.conf")
	if err := os.WriteFile(conf, []byte("server_name: n1\nlisten: 127.0.0.1:-1\ncluster { name: c, listne: 127.0.0.1:-1 }\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := runCLI(t, ctx, "up", "--config", conf, "--data-dir", t.TempDir(), "--metrics-addr", "127.0.0.1:0", "--log-level", "error")
	if err == nil || !strings.Contains(err.Error(), conf) || !strings.Contains(err.Error(), `"listne"`) {
		t.Fatalf("up --config with an unknown key: %v, want an error naming %s and listne", err, conf)
	}
}
