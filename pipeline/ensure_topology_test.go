package pipeline_test

import (
	"context"
	"testing"
	"time"

	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

// TestEnsureTopologyKeepsClusterReplicas: EnsureTopology, which every
// command run as admin calls (model push, jobs cancel), leaves a cluster's
// three replicas as they are. It applied DefaultTopology(1) as is, so a
// model push lowered every stream to one replica: the node that held one
// then took it down with it.
func TestEnsureTopologyKeepsClusterReplicas(t *testing.T) {
	c := pipelinetest.StartCluster(t, 3, "")
	b := connectCluster(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	topo := pipeline.DefaultTopology(3)
	if err := b.ApplyTopology(ctx, topo); err != nil {
		t.Fatal(err)
	}
	checkReplicas(t, b, topo.StreamNames(), 3)
	if err := b.EnsureTopology(ctx); err != nil {
		t.Fatal(err)
	}
	checkReplicas(t, b, topo.StreamNames(), 3)
}
