package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/largeforge/largeforge/consumers/datasetsink"
	"github.com/largeforge/largeforge/consumers/infer"
	"github.com/largeforge/largeforge/consumers/resultsink"
	"github.com/largeforge/largeforge/dataset"
	"github.com/largeforge/largeforge/internal/samples"
	"github.com/largeforge/largeforge/internal/testenv"
	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/producers/ingest"
	"github.com/largeforge/largeforge/producers/submit"
)

// startRoles starts a server with the users of deploy/nats-roles.conf and
// applies the topology as admin.
func startRoles(t *testing.T) (*pipeline.Embedded, *pipeline.Bus) {
	t.Helper()
	return pipelinetest.StartRoles(t, nil)
}

// TestRolesRunPipeline runs ingestion and a batch job with each worker on
// its own role's credential (deploy/nats-roles.conf): ingest as ingest, the
// dataset sink as datasets, the infer worker as infer, the results sink as
// results, the submitter as submit, each on its own inbox prefix. Everything completes and no restricted
// connection hits a permissions violation.
func TestRolesRunPipeline(t *testing.T) {
	dir := filepath.Dir(testenv.SharedFile(t, "models/stories260K/model.safetensors"))
	e, _ := startRoles(t)
	log := pipelinetest.Logger(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conns := map[string]*pipeline.Bus{}
	for _, role := range []string{"ingest", "datasets", "infer", "results", "submit"} {
		conns[role] = pipelinetest.ConnectRole(t, e, role, log)
	}
	wctx, stop := context.WithCancel(ctx)
	var waits []func() error
	t.Cleanup(func() {
		stop()
		for _, w := range waits {
			if err := w(); err != nil {
				t.Error(err)
			}
		}
	})
	m, err := dataset.NewMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	ds, err := datasetsink.Start(wctx, conns["datasets"], t.TempDir(), log, m)
	if err != nil {
		t.Fatalf("dataset sink as datasets: %v", err)
	}
	waits = append(waits, ds.Wait)
	iw, err := infer.StartDirs(wctx, conns["infer"], map[string]string{"stories": dir},
		infer.Config{Slots: 2, HeartbeatEvery: time.Second, MaxWait: 50 * time.Millisecond}, log, nil)
	if err != nil {
		t.Fatalf("infer worker as infer: %v", err)
	}
	waits = append(waits, iw.Wait)
	rs, err := resultsink.Start(wctx, conns["results"], t.TempDir(), resultsink.Options{}, log)
	if err != nil {
		t.Fatalf("results sink as results: %v", err)
	}
	waits = append(waits, rs.Wait)

	files, err := samples.WriteAll(t.TempDir(), 1)
	if err != nil {
		t.Fatal(err)
	}
	icfg := ingest.DefaultConfig()
	icfg.Dataset, icfg.Wait = "roles", 20*time.Second
	in, err := ingest.New(conns["ingest"], icfg, log)
	if err != nil {
		t.Fatal(err)
	}
	sum, err := in.Ingest(ctx, files[0], nil)
	if err != nil || !sum.Confirmed || sum.Accepted == 0 {
		t.Errorf("ingest as ingest: %+v %v", sum, err)
	}

	jobFile := roleJobFile(t)
	sub, err := submit.New(ctx, conns["submit"], submit.Config{Model: "stories"}, log)
	if err != nil {
		t.Fatal(err)
	}
	js, err := sub.Submit(ctx, jobFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	pipelinetest.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		j, err := sub.Store().Get(ctx, js.Job.ID)
		if err != nil {
			return err
		}
		if j.Status != jobs.StatusCompleted || j.RequestCounts.Completed != 2 || j.RequestCounts.Failed != 1 {
			return fmt.Errorf("job %s: %+v", j.Status, j.RequestCounts)
		}
		return nil
	})
	for role, b := range conns {
		if err := b.Conn().LastError(); err != nil {
			t.Errorf("%s: %v", role, err)
		}
	}
}

// TestGatewayCommandAsAPIRole runs `largeforge gateway` with the api
// credential of deploy/nats-roles.conf: it checks the topology (an admin
// applied it) and serves.
func TestGatewayCommandAsAPIRole(t *testing.T) {
	e, _ := startRoles(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	gctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := runCLI(t, gctx, "--nats="+e.ClientURL(), "--nats-user=api", "--nats-password="+pipelinetest.RolePassword("api"), "--log-level=error", "gateway", "--http", addr)
		done <- err
	}()
	pipelinetest.CheckFor(t, 20*time.Second, 100*time.Millisecond, func() error {
		resp, err := http.Get("http://" + addr + "/v1/models")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("GET /v1/models: %s", resp.Status)
		}
		return nil
	})
	stop()
	if err := <-done; err != nil {
		t.Errorf("gateway: %v", err)
	}
}
