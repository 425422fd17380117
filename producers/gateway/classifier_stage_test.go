package gateway_test

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/largeforge/largeforge/internal/samples"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/producers/gateway"
	"github.com/largeforge/largeforge/producers/gateway/classifier"
	"github.com/largeforge/largeforge/schemas"
)

// sampleClassifier trains the learned stage on the sample routing rows
// (experts code, math and stories).
func sampleClassifier(t *testing.T) *classifier.Classifier {
	t.Helper()
	var ex []classifier.Example
	for _, r := range samples.Router(rand.New(rand.NewPCG(5, 5)), 150) {
		ex = append(ex, classifier.Example{Prompt: r.Prompt, Expert: r.Expert})
	}
	c, err := classifier.Train(context.Background(), ex, classifier.Config{Dim: 1024, Epochs: 10})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestRouterClassifierStage(t *testing.T) {
	clf := sampleClassifier(t)
	experts := []schemas.ExpertConfig{
		expert("code", 0, []string{"python"}, nil),
		expert("math", 0, nil, nil),
		expert("stories", 0, nil, nil),
		expert("general", 9, nil, nil), // unknown to the classifier
	}
	r, err := gateway.NewRouter(experts, gateway.WithClassifier(clf))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		prompt    string
		dead      string
		want      string
		wantStage string
	}{
		{name: "rule decides", prompt: "my python script fails", want: "code", wantStage: gateway.StageRules},
		{name: "classifier: math", prompt: "Solve for x: 5x + 1 = 11.", want: "math", wantStage: gateway.StageClassifier},
		{name: "classifier: stories", prompt: "Write a bedtime story where a clever fox saves the day.", want: "stories", wantStage: gateway.StageClassifier},
		{name: "classifier: code", prompt: "Why does my golang handler crash with a nil pointer?", want: "code", wantStage: gateway.StageClassifier},
		{name: "best is dead: next alternative", prompt: "Solve for x: 5x + 1 = 11.", dead: "math", wantStage: gateway.StageClassifier},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, err := r.Route(tc.prompt, func(n string) bool { return n != tc.dead })
			if err != nil {
				t.Fatal(err)
			}
			if d.Stage != tc.wantStage || (tc.want != "" && d.Expert != tc.want) {
				t.Fatalf("decision %+v, want %s by %s", d, tc.want, tc.wantStage)
			}
			if err := d.RouteResponse.Validate(); err != nil {
				t.Error(err)
			}
			if len(d.Alternatives) != 3 {
				t.Fatalf("alternatives %+v", d.Alternatives)
			}
			for i := 1; i < len(d.Alternatives); i++ {
				if d.Alternatives[i].Confidence > d.Alternatives[i-1].Confidence {
					t.Errorf("alternatives not sorted: %+v", d.Alternatives)
				}
			}
			if tc.wantStage != gateway.StageClassifier {
				return
			}
			preds, err := clf.Predict(tc.prompt)
			if err != nil {
				t.Fatal(err)
			}
			if tc.dead == "" {
				if d.Confidence != preds[0].Probability || d.Confidence < 0.5 {
					t.Errorf("confidence %v, classifier %+v", d.Confidence, preds)
				}
				return
			}
			// The most probable expert is dead: the next one is chosen and
			// the dead one leads the alternatives.
			if d.Expert != preds[1].Expert || d.Alternatives[0].Expert != tc.dead {
				t.Errorf("decision %+v, classifier %+v", d, preds)
			}
		})
	}
}

// TestAutoRoutingClassifier: with the learned stage, /v1/route reports the
// classifier as the deciding stage, LF_ROUTES records it and
// routing_latency_seconds counts it under classifier="classifier".
func TestAutoRoutingClassifier(t *testing.T) {
	clf := sampleClassifier(t)
	experts := []schemas.ExpertConfig{expert("stories", 0, nil, nil), expert("math", 0, nil, nil)}
	s := newStack(t, gateway.Config{Experts: experts, Classifier: clf})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp := s.post(t, ctx, "/v1/route", `{"prompt":"Tell me a tale about a sleepy bear."}`, map[string]string{"X-Request-Id": "route-clf"})
	var d gateway.Decision
	if err := json.NewDecoder(resp.Body).Decode(&d); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || d.Expert != "stories" || d.Stage != gateway.StageClassifier || d.Confidence <= 0.5 {
		t.Fatalf("route %d %+v", resp.StatusCode, d)
	}
	// math is more probable but has no live worker.
	resp = s.post(t, ctx, "/v1/route", `{"prompt":"Integrate 2 to the power n from zero to one."}`, nil)
	var d2 gateway.Decision
	if err := json.NewDecoder(resp.Body).Decode(&d2); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if d2.Expert != "stories" || d2.Stage != gateway.StageClassifier || len(d2.Alternatives) != 1 || d2.Alternatives[0].Expert != "math" || d2.Alternatives[0].Confidence <= d2.Confidence {
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
			if l := m.GetLabel(); len(l) != 1 || l[0].GetValue() != gateway.StageClassifier || m.GetHistogram().GetSampleCount() != 2 {
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
		var rec gateway.RouteRecord
		if err := json.Unmarshal(m.Data, &rec); err != nil {
			return err
		}
		if rec.Stage != gateway.StageClassifier {
			t.Errorf("LF_ROUTES record %+v", rec)
		}
		return nil
	})
}
