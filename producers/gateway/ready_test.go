package gateway_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/producers/gateway"
)

// TestReadyFollowsTheBus: /ready is 200 while the gateway is connected to
// the bus, even with no live worker (when /health is 503), and 503 naming
// the bus once the connection is gone.
func TestReadyFollowsTheBus(t *testing.T) {
	_, bus := pipelinetest.StartBus(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reg := prometheus.NewRegistry()
	g, err := gateway.New(ctx, bus, gateway.Config{}, pipelinetest.Logger(t), reg, reg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(g.Handler())
	defer srv.Close()
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/ready"); code != http.StatusOK {
		t.Fatalf("/ready connected: %d %s", code, body)
	}
	if code, _ := get("/health"); code != http.StatusServiceUnavailable {
		t.Fatalf("/health with no worker: %d, want 503", code)
	}
	bus.Close()
	if code, body := get("/ready"); code != http.StatusServiceUnavailable || !strings.Contains(body, "not connected to NATS") {
		t.Fatalf("/ready disconnected: %d %s", code, body)
	}
}
