package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/largeforge/largeforge/internal/promreg/promregtest"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/producers/gateway"
	"github.com/largeforge/largeforge/routing"
	"github.com/largeforge/largeforge/routing/routingtest"
	"github.com/largeforge/largeforge/schemas"
)

// TestAutoRoutingClassifier: with the learned stage, /v1/route reports the
// classifier as the deciding stage, LF_ROUTES records it and
// routing_latency_seconds counts it under classifier="classifier".
func TestAutoRoutingClassifier(t *testing.T) {
	clf := routingtest.SampleClassifier(t)
	experts := []schemas.ExpertConfig{routingtest.Expert("stories", 0, nil, nil), routingtest.Expert("math", 0, nil, nil)}
	s := newStack(t, gateway.Config{Experts: experts, Classifier: clf})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp := s.post(t, ctx, "/v1/route", `{"prompt":"Tell me a tale about a sleepy bear."}`, map[string]string{"X-Request-Id": "route-clf"})
	var d schemas.RouteDecision
	if err := json.NewDecoder(resp.Body).Decode(&d); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || d.Expert != "stories" || d.Stage != routing.StageClassifier || d.Confidence <= 0.5 {
		t.Fatalf("route %d %+v", resp.StatusCode, d)
	}
	// math is more probable but has no live worker.
	resp = s.post(t, ctx, "/v1/route", `{"prompt":"Integrate 2 to the power n from zero to one."}`, nil)
	var d2 schemas.RouteDecision
	if err := json.NewDecoder(resp.Body).Decode(&d2); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if d2.Expert != "stories" || d2.Stage != routing.StageClassifier || len(d2.Alternatives) != 1 || d2.Alternatives[0].Expert != "math" || d2.Alternatives[0].Confidence <= d2.Confidence {
		t.Errorf("route with math dead: %+v", d2)
	}
	mfs, err := s.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != schemas.MetricRoutingLatencySeconds {
			continue
		}
		for _, m := range mf.GetMetric() {
			if l := m.GetLabel(); len(l) != 1 || l[0].GetValue() != routing.StageClassifier || m.GetHistogram().GetSampleCount() != 2 {
				t.Errorf("routing_latency_seconds %v: want 2 samples labelled classifier", m)
			}
		}
	}
	st, err := s.bus.JetStream().Stream(ctx, pipeline.StreamRoutes)
	if err != nil {
		t.Fatal(err)
	}
	pipelinetest.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		m, err := st.GetLastMsgForSubject(ctx, "lf.route."+gateway.RouteJobInteractive)
		if err != nil {
			return err
		}
		var rec schemas.RouteRecord
		if err := json.Unmarshal(m.Data, &rec); err != nil {
			return err
		}
		if rec.Stage != routing.StageClassifier {
			t.Errorf("LF_ROUTES record %+v", rec)
		}
		return nil
	})
}

// TestAutoRouting routes "auto" requests over HTTP: stories has a live
// worker, coder has none, so coder prompts fall back to stories.
func TestAutoRouting(t *testing.T) {
	s := newStack(t, gateway.Config{Experts: routingtest.Experts()[:2]})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	resp := s.post(t, ctx, "/v1/route", `{"prompt":"fix this python function"}`, map[string]string{"X-Request-Id": "route-1"})
	var d schemas.RouteDecision
	if err := json.NewDecoder(resp.Body).Decode(&d); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || d.Expert != "stories" || len(d.Alternatives) != 1 || d.Alternatives[0].Expert != "coder" || d.Alternatives[0].Confidence != 1 {
		t.Errorf("route %d %+v", resp.StatusCode, d)
	}

	want := s.direct(t, schemas.CompletionRequest{Prompt: "Once upon a time", MaxTokens: 12, Temperature: 0})
	resp = s.post(t, ctx, "/v1/completions", `{"model":"auto","prompt":"Once upon a time","max_tokens":12,"temperature":0}`, nil)
	var c schemas.CompletionResponse
	if err := json.NewDecoder(resp.Body).Decode(&c); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("X-Largeforge-Expert") != "stories" || c.Model != "stories" || c.Choices[0].Text != want.Text {
		t.Errorf("auto completion %d %q: %+v, direct %q", resp.StatusCode, resp.Header.Get("X-Largeforge-Expert"), c, want.Text)
	}
	if v := promregtest.Value(t, s.reg, schemas.MetricRoutingDecisionsTotal, "expert", "stories"); v != 2 {
		t.Errorf("routing_decisions_total{expert=stories} = %v, want 2", v)
	}

	// The decision of route-1 is in LF_ROUTES.
	st, err := s.bus.JetStream().Stream(ctx, pipeline.StreamRoutes)
	if err != nil {
		t.Fatal(err)
	}
	var rec schemas.RouteRecord
	deadline := time.Now().Add(time.Minute) // a hang guard
	for seq := uint64(1); time.Now().Before(deadline); {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		seq++
		if err := json.Unmarshal(m.Data, &rec); err != nil {
			t.Fatal(err)
		}
		if rec.RequestID == "route-1" {
			break
		}
	}
	if rec.RequestID != "route-1" || rec.Expert != "stories" || rec.Stage != routing.StageRules || !strings.HasPrefix(rec.At, "20") {
		t.Errorf("LF_ROUTES record %+v", rec)
	}
}

// TestExpertsKV applies lf_experts changes live.
func TestExpertsKV(t *testing.T) {
	s := newStack(t, gateway.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	route := func() (int, string) {
		resp := s.post(t, ctx, "/v1/route", `{"prompt":"a story"}`, nil)
		defer resp.Body.Close()
		var d schemas.RouteDecision
		_ = json.NewDecoder(resp.Body).Decode(&d)
		return resp.StatusCode, d.Expert
	}
	if code, _ := route(); code != 404 {
		t.Fatalf("route without experts: %d, want 404", code)
	}
	kv, err := s.bus.KV(ctx, pipeline.BucketExperts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "stories", []byte(`{"name":"stories","model_path":"models/stories","keywords":["story"]}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "bad", []byte(`{"name":"other"}`)); err != nil {
		t.Fatal(err)
	}
	pipelinetest.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		if code, e := route(); code != 200 || e != "stories" {
			return fmt.Errorf("route %d %q", code, e)
		}
		return nil
	})
	if err := kv.Delete(ctx, "stories"); err != nil {
		t.Fatal(err)
	}
	pipelinetest.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		if code, _ := route(); code != 404 {
			return fmt.Errorf("route after delete: %d", code)
		}
		return nil
	})
}
