package gateway

import (
	"net/http"
	"time"

	"github.com/rs/zerolog"
)

// getModel serves GET /v1/models/{id}: the model object of a model that a
// live worker serves, lf_models holds or an expert names (live_workers may
// be 0), else OpenAI's 404 model_not_found.
func (g *Gateway) getModel(w http.ResponseWriter, r *http.Request, _ zerolog.Logger) {
	id := r.PathValue("id")
	asked := time.Now()
	live, stored, err := g.snapshot(r.Context(), time.Time{})
	if err == nil && live[id] == 0 && !stored[id] {
		live, stored, err = g.snapshot(r.Context(), asked) // maybe new since the cached lists
	}
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "server_error", "", "bus_error", err.Error())
		return
	}
	if _, expert := g.expert(id); live[id] == 0 && !stored[id] && !expert {
		writeError(w, http.StatusNotFound, "invalid_request_error", "", "model_not_found", modelNotFound(id))
		return
	}
	writeJSON(w, http.StatusOK, ModelInfo{ID: id, Object: "model", Created: g.started.Unix(), OwnedBy: "largeforge", LiveWorkers: live[id]})
}
