package main

import (
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

// TestTopologyShow: topology show prints every stream, KV bucket and
// object store with the limits in effect (an override applied included)
// and what each holds; --json the same as data; a missing one is named and
// the exit status is non-zero.
func TestTopologyShow(t *testing.T) {
	e, bus := pipelinetest.StartBus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	objs, err := bus.Objects(ctx, pipeline.BucketArtifacts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := objs.Put(ctx, "probe", strings.NewReader(strings.Repeat("x", 4096))); err != nil {
		t.Fatal(err)
	}
	if out, err := runCLI(t, ctx, "topology", "apply", "--nats", e.ClientURL(), "--limit", "LF_RESULTS=72h"); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	out, err := runCLI(t, ctx, "topology", "show", "--nats", e.ClientURL(), "--json")
	if err != nil {
		t.Fatalf("show --json: %v\n%s", err, out)
	}
	var rows []topologyRow
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	topo := pipeline.DefaultTopology(1)
	if want := len(topo.Streams) + len(topo.KeyValues) + len(topo.ObjectStores); len(rows) != want {
		t.Errorf("%d rows, want %d", len(rows), want)
	}
	byName := map[string]topologyRow{}
	for _, r := range rows {
		byName[r.Name] = r
		if r.Replicas != 1 || r.Missing {
			t.Errorf("%+v: want 1 replica, present", r)
		}
	}
	lim := pipeline.DefaultLimits()
	if r := byName[pipeline.StreamRequests]; r.MaxBytes != lim[pipeline.StreamRequests].MaxBytes || r.MaxAgeS != 0 {
		t.Errorf("LF_REQUESTS %+v, want max bytes %d, no max age", r, lim[pipeline.StreamRequests].MaxBytes)
	}
	if r := byName[pipeline.StreamResults]; r.MaxAgeS != (72*time.Hour).Seconds() || r.MaxBytes != 0 {
		t.Errorf("LF_RESULTS %+v, want the applied 72h and no size limit", r)
	}
	if r := byName[pipeline.BucketArtifacts]; r.Kind != "object store" || r.Bytes < 4096 || r.MaxBytes != lim[pipeline.BucketArtifacts].MaxBytes {
		t.Errorf("lf_artifacts %+v", r)
	}
	if r := byName[pipeline.BucketWorkers]; r.Kind != "kv" || r.MaxAgeS != pipeline.WorkerHeartbeatTTL.Seconds() {
		t.Errorf("lf_workers %+v", r)
	}
	out, err = runCLI(t, ctx, "topology", "show", "--nats", e.ClientURL())
	if err != nil {
		t.Fatalf("show: %v\n%s", err, out)
	}
	for _, re := range []string{`(?m)^stream +LF_RESULTS +1 +3d +none `, `(?m)^stream +LF_REQUESTS +1 +none +1 GiB `, `(?m)^object store +lf_artifacts +1 +none +8 GiB +\d`} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("no line matching %s in\n%s", re, out)
		}
	}
	if err := bus.JetStream().DeleteStream(ctx, pipeline.StreamRoutes); err != nil {
		t.Fatal(err)
	}
	out, err = runCLI(t, ctx, "topology", "show", "--nats", e.ClientURL())
	if err == nil || !strings.Contains(err.Error(), "stream LF_ROUTES is missing") || !regexp.MustCompile(`(?m)^stream +LF_ROUTES +missing`).MatchString(out) {
		t.Errorf("without LF_ROUTES: %v\n%s", err, out)
	}
}
