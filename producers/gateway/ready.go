package gateway

import (
	"net/http"

	"github.com/rs/zerolog"
)

// ready answers GET /ready, the readiness probe: 200 while the gateway is
// connected to the bus (its listener is up, since it answers), 503 naming
// the bus otherwise. Unlike /health it does not depend on live workers: a
// gateway with no worker yet still takes requests, which wait --worker-wait
// for one.
func (g *Gateway) ready(w http.ResponseWriter, _ *http.Request, _ zerolog.Logger) {
	if !g.bus.Connected() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "bus": "not connected to NATS"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}
