package pipelinetest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/largeforge/largeforge/internal/benchenv"
	"github.com/largeforge/largeforge/pipeline"
)

// EnvInt is the positive integer in the environment variable name, else
// def: a benchmark's size knob (LF_BENCH_...).
func EnvInt(name string, def int) int { return benchenv.Int(name, def) }

// CPUSeconds is the CPU time (user and system) the process has used. A
// benchmark whose servers run in the process (StartCluster) reports the
// work of a phase with it: other processes on a loaded machine change it
// less than the phase's wall time.
func CPUSeconds() float64 { return benchenv.CPUSeconds() }

// StartClusterBus starts an n-node cluster (StartCluster with no extra
// configuration), connects to all its nodes and applies
// pipeline.DefaultTopology(replicas), waiting until every stream of it has
// its replicas current. stop closes the connection and shuts every node
// down (a benchmark's phase ends so, and the next runs on a machine with
// no idle cluster); t.Cleanup calls it as well.
func StartClusterBus(t testing.TB, n, replicas int) (c *Cluster, bus *pipeline.Bus, stop func()) {
	t.Helper()
	c = StartCluster(t, n, "")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bus, err := pipeline.Connect(ctx, pipeline.ConnConfig{URL: c.URLs(), Name: t.Name()}, Logger(t))
	if err != nil {
		t.Fatalf("connect to the cluster: %v", err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			bus.Close()
			for _, node := range c.Nodes {
				node.Shutdown()
			}
		})
	}
	t.Cleanup(stop)
	topo := pipeline.DefaultTopology(replicas)
	if err := bus.ApplyTopology(ctx, topo); err != nil {
		t.Fatalf("apply the topology with %d replicas: %v", replicas, err)
	}
	if err := bus.WaitTopology(ctx, topo); err != nil {
		t.Fatal(err)
	}
	return c, bus, stop
}
