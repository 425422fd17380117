package main

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

// chaosReplicas is the chaos cluster's replica count: every stream, KV
// bucket and object store survives one node down.
const chaosReplicas = 3

// startChaosCluster starts three cluster nodes, each a process of its own
// (startNodes), applies the topology with three replicas as admin and
// waits until all of it has a leader and current replicas. It returns the
// nodes, their client URLs (every process's --nats) and an admin
// connection to all of them.
func startChaosCluster(t *testing.T, ctx context.Context, bin string) ([]*nodeProc, string, *pipeline.Bus) {
	t.Helper()
	nodes := startNodes(t)
	cns := make([]*pipelinetest.ClusterNode, len(nodes))
	for i, n := range nodes {
		cns[i] = n.ClusterNode
	}
	urls := (&pipelinetest.Cluster{Nodes: cns}).URLs()
	m := machine{bin: bin, url: urls}
	// The cluster elects its first meta leader once all nodes run (more
	// than a minute once, two chaos runs at once on two cores).
	pipelinetest.CheckFor(t, 3*time.Minute, 100*time.Millisecond, func() error {
		_, err := m.run(ctx, "admin", "topology", "apply", "--replicas", fmt.Sprint(chaosReplicas))
		return err
	})
	admin, err := pipeline.Connect(ctx, pipeline.ConnConfig{URL: urls, Name: t.Name(), User: "admin",
		Password: pipelinetest.RolePassword("admin"), InboxPrefix: "_INBOX_admin", ReconnectWait: 100 * time.Millisecond}, pipelinetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(admin.Close)
	if err := clusterHealed(ctx, admin, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	return nodes, urls, admin
}

// killNode SIGKILLs n's process, leaves it down for down (while the
// workload goes on through the other two), starts it again on its store
// and ports, and waits until the cluster has healed, so that the next node
// kill leaves every stream a quorum. It runs on the chaos goroutine:
// failures are returned, not reported to the test.
func (c *chaosProcs) killNode(ctx context.Context, admin *pipeline.Bus, n *nodeProc, down time.Duration) error {
	if err := n.p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill node %s: %w", n.Name, err)
	}
	<-n.done
	n.p = nil
	c.mu.Lock()
	c.kills["node"]++
	c.mu.Unlock()
	c.t.Logf("node %s killed, down for %v", n.Name, down)
	select {
	case <-ctx.Done(): // the workload is done: start it again at once
	case <-time.After(down):
	}
	if err := n.tryStart(); err != nil {
		return err
	}
	c.t.Logf("node %s restarted", n.Name)
	// The checks after the workload wait for the cluster themselves.
	return clusterHealed(context.WithoutCancel(ctx), admin, 2*time.Minute)
}

// clusterHealed waits up to timeout until every stream, KV bucket and
// object store of the topology has a leader and all its replicas current
// (streamLeader); its error names the last one that had not.
func clusterHealed(ctx context.Context, admin *pipeline.Bus, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := func() error {
			for _, name := range pipeline.DefaultTopology(chaosReplicas).StreamNames() {
				actx, cancel := context.WithTimeout(ctx, attemptTimeout)
				_, err := streamLeader(actx, admin, name)
				cancel()
				if err != nil {
					return err
				}
			}
			return nil
		}()
		if err == nil || errors.Is(ctx.Err(), context.Canceled) {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the cluster has not healed in %v: %w", timeout, err)
		}
		time.Sleep(50 * time.Millisecond) // polling interval
	}
}

// jobEnded waits up to timeout until job id has ended and returns it; each
// look at its record has its own deadline (attemptTimeout), since a request
// in flight when a node dies may never be answered.
func jobEnded(t *testing.T, ctx context.Context, store *jobs.Store, id string, timeout time.Duration) jobs.Job {
	t.Helper()
	var j jobs.Job
	pipelinetest.CheckFor(t, timeout, 20*time.Millisecond, func() error {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		defer cancel()
		var err error
		if j, err = store.Get(actx, id); err == nil && !j.Status.Terminal() {
			return fmt.Errorf("job %s still %s %+v", id, j.Status, j.RequestCounts)
		}
		return err
	})
	return j
}
