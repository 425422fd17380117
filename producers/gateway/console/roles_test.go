package console_test

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/producers/gateway/console"
	"github.com/largeforge/largeforge/schemas"
)

// TestConsoleAsAPIRole serves the console over the api role's credential
// of deploy/nats-roles.conf: every endpoint reads what it shows (job
// records, training events, routing decisions, manifests, heartbeats,
// models) and a cancel goes through, with no permissions violation in the
// server's log.
func TestConsoleAsAPIRole(t *testing.T) {
	var serverLog pipelinetest.Buffer
	e, admin := pipelinetest.StartRoles(t, &serverLog)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	store, err := jobs.Open(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	j, err := store.Create(ctx, jobs.Spec{Model: "m"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Transition(ctx, j.ID, jobs.StatusInProgress, nil); err != nil {
		t.Fatal(err)
	}
	ev, _ := json.Marshal(schemas.TrainEvent{Job: j.ID, Kind: schemas.TrainEventStep, GlobalStep: 1, Loss: 2.5, LearningRate: 1e-3})
	if _, err := admin.Publish(ctx, "lf.events.train."+j.ID, ev, j.ID+"/0/step/1", nil); err != nil {
		t.Fatal(err)
	}
	rd, _ := json.Marshal(schemas.RouteRecord{RequestID: "r1", RouteDecision: schemas.RouteDecision{RouteResponse: schemas.RouteResponse{Expert: "e1", Confidence: 1}, Stage: "rules"}})
	if _, err := admin.Publish(ctx, "lf.route.interactive", rd, "r1", nil); err != nil {
		t.Fatal(err)
	}
	dkv, err := admin.KV(ctx, pipeline.BucketDatasets)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dkv.Put(ctx, "d1", []byte(`{"name":"d1","format":"alpaca","counts":{"rows":2}}`)); err != nil {
		t.Fatal(err)
	}

	api := pipelinetest.ConnectRole(t, e, "api", pipelinetest.Logger(t))
	c, err := console.New(api, console.Options{Log: pipelinetest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(c.Handler())
	defer srv.Close()
	tests := []struct{ method, path, want string }{
		{"GET", "/console/api/jobs", j.ID},
		{"GET", "/console/api/jobs/" + j.ID, `"status":"in_progress"`},
		{"GET", "/console/api/jobs/" + j.ID + "/events", `"loss":2.5`},
		{"GET", "/console/api/jobs/" + j.ID + "/errors", `"final":false`},
		{"GET", "/console/api/datasets", `"name":"d1"`},
		{"GET", "/console/api/datasets/d1", `"rejects":[]`},
		{"GET", "/console/api/workers", `"data":[]`},
		{"GET", "/console/api/experts", `"expert":"e1"`},
		{"GET", "/console/api/models", `"data":[]`},
		{"POST", "/console/api/jobs/" + j.ID + "/cancel", `"status":"cancelling"`},
	}
	for _, tc := range tests {
		status, _, body := get(t, tc.method, srv.URL+tc.path, "")
		if status != 200 || !strings.Contains(body, tc.want) {
			t.Errorf("%s %s as api: %d %s, want 200 with %s", tc.method, tc.path, status, body, tc.want)
		}
	}
	if got, err := store.Get(ctx, j.ID); err != nil || got.Status != jobs.StatusCancelling {
		t.Errorf("after cancel as api: %v %v", got.Status, err)
	}
	if strings.Contains(serverLog.String(), "Violation") {
		t.Errorf("permissions violations:\n%s", serverLog.String())
	}
}
