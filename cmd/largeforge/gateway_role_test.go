package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

// TestGatewayCommandAsGatewayRole runs `largeforge gateway` with the
// gateway credential of deploy/nats-roles.conf: it cannot apply the
// topology, warns, and serves.
func TestGatewayCommandAsGatewayRole(t *testing.T) {
	roles, err := os.ReadFile(filepath.Join("..", "..", "deploy", "nats-roles.conf"))
	if err != nil {
		t.Fatal(err)
	}
	for _, role := range []string{"ADMIN", "GATEWAY", "INFER", "RESULTS", "DATASETS", "INGEST"} {
		t.Setenv("LF_"+role+"_PASSWORD", strings.ToLower(role)+"-secret")
	}
	e := pipelinetest.StartServerConf(t, pipeline.DefaultNATSConf+"\n"+string(roles))
	admin := pipelinetest.ConnectAs(t, e, "admin", "admin-secret", pipelinetest.Logger(t))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := admin.EnsureTopology(ctx); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	gctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := runCLI(t, gctx, "--nats="+e.ClientURL(), "--nats-user=gateway", "--nats-password=gateway-secret", "--log-level=error", "gateway", "--http", addr)
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
