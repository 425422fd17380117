package main

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

// TestGatewayNamesMissingTopology: the gateway on the api credential, on a
// server where no admin applied the topology, fails at start naming every
// stream and bucket its routes use, the Files, Batches, Fine-tuning and
// console ones included, rather than failing at a request.
func TestGatewayNamesMissingTopology(t *testing.T) {
	e := pipelinetest.StartRolesServer(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := runCLI(t, ctx, "--nats="+e.ClientURL(), "--nats-user=api", "--nats-password="+pipelinetest.RolePassword("api"), "--log-level=error",
		"--wait-for-nats=300ms", // asks again for that long (5 s by default) before it names what is missing
		"gateway", "--http", "127.0.0.1:0")
	if !errors.Is(err, pipeline.ErrTopologyMissing) {
		t.Fatalf("gateway as api on an empty server: %v, want ErrTopologyMissing", err)
	}
	for _, want := range []string{"stream LF_ROUTES", "stream LF_REQUESTS", "stream LF_RESULTS", "stream LF_TRAIN", "stream LF_EVENTS",
		"kv bucket lf_jobs", "kv bucket lf_datasets", "kv bucket lf_claims", "kv bucket lf_files", "object store lf_artifacts", "object store lf_models"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%v does not say %q", err, want)
		}
	}
}
