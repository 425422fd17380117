package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

// TestTopologyApplyLimitFlag: topology apply --limit overrides a default
// limit on the server; a max age where it would drop what a job needs is
// refused, naming the stream and the rule.
func TestTopologyApplyLimitFlag(t *testing.T) {
	e, bus := pipelinetest.StartBus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := runCLI(t, ctx, "topology", "apply", "--nats", e.ClientURL(), "--limit", "LF_RESULTS=3d", "--limit", "lf_artifacts=9GiB"); err != nil {
		t.Fatal(err)
	}
	s, err := bus.JetStream().Stream(ctx, pipeline.StreamResults)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.CachedInfo().Config.MaxAge; got != 72*time.Hour {
		t.Errorf("LF_RESULTS max age %s, want 72h", got)
	}
	o, err := bus.JetStream().Stream(ctx, "OBJ_"+pipeline.BucketArtifacts)
	if err != nil {
		t.Fatal(err)
	}
	if got := o.CachedInfo().Config.MaxBytes; got != 9<<30 {
		t.Errorf("lf_artifacts max bytes %d, want 9GiB", got)
	}
	_, err = runCLI(t, ctx, "topology", "apply", "--nats", e.ClientURL(), "--limit", "LF_REQUESTS=24h")
	if err == nil || !strings.Contains(err.Error(), "limit of LF_REQUESTS: no max age allowed") {
		t.Fatalf("age on the request queue: %v", err)
	}
}
