package gateway_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/producers/gateway"
	"github.com/largeforge/largeforge/schemas"
)

func expert(name string, priority int, keywords, domains []string) schemas.ExpertConfig {
	e := schemas.DefaultExpertConfig()
	e.Name, e.ModelPath, e.Priority, e.Keywords, e.Domains = name, "models/"+name, priority, keywords, domains
	return e
}

func testExperts() []schemas.ExpertConfig {
	return []schemas.ExpertConfig{
		expert("coder", 1, []string{"python", "function", "stack trace"}, []string{"code"}),
		expert("stories", 0, []string{"story", "once upon a time"}, []string{"fiction"}),
		expert("general", 5, nil, nil),
	}
}

func TestRouter(t *testing.T) {
	r, err := gateway.NewRouter(testExperts())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		prompt    string
		dead      string // an expert without live workers
		want      string
		wantStage string
		wantConf  float64
		wantErr   error
	}{
		{name: "keywords", prompt: "Fix this Python function, please", want: "coder", wantStage: gateway.StageRules, wantConf: 1},
		{name: "phrase", prompt: "Once upon a time there was a dog", want: "stories", wantStage: gateway.StageRules, wantConf: 1},
		{name: "split", prompt: "a story about python code", want: "coder", wantStage: gateway.StageRules, wantConf: 3.0 / 5},
		{name: "no words inside words", prompt: "pythonic functional", want: "general", wantStage: gateway.StageDefault, wantConf: 1.0 / 3},
		{name: "nothing matches: priority", prompt: "hello there", want: "general", wantStage: gateway.StageDefault, wantConf: 1.0 / 3},
		{name: "best is dead: next alternative", prompt: "python story python function", dead: "coder", want: "stories", wantStage: gateway.StageRules, wantConf: 2.0 / 6},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, err := r.Route(tc.prompt, func(n string) bool { return n != tc.dead })
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err %v, want %v", err, tc.wantErr)
			}
			if d.Expert != tc.want || d.Stage != tc.wantStage || d.Confidence < tc.wantConf-1e-9 || d.Confidence > tc.wantConf+1e-9 {
				t.Errorf("decision %+v, want %s by %s at %v", d, tc.want, tc.wantStage, tc.wantConf)
			}
			if err := d.RouteResponse.Validate(); err != nil {
				t.Error(err)
			}
			if len(d.Alternatives) != 2 || d.Alternatives[0].Confidence < d.Alternatives[1].Confidence {
				t.Errorf("alternatives %+v: want the 2 others, sorted", d.Alternatives)
			}
		})
	}
	if _, err := r.Route("python", func(string) bool { return false }); !errors.Is(err, gateway.ErrNoWorker) {
		t.Errorf("no live expert: err %v", err)
	}
}

func TestNewRouter(t *testing.T) {
	tests := []struct {
		name    string
		experts []schemas.ExpertConfig
		wantErr bool
	}{
		{name: "ok", experts: testExperts()},
		{name: "none", wantErr: true},
		{name: "duplicate", experts: append(testExperts(), expert("coder", 0, nil, nil)), wantErr: true},
		{name: "auto reserved", experts: []schemas.ExpertConfig{expert("auto", 0, nil, nil)}, wantErr: true},
		{name: "invalid", experts: []schemas.ExpertConfig{{Name: "x"}}, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := gateway.NewRouter(tc.experts)
			if (err != nil) != tc.wantErr || (err != nil && !errors.Is(err, gateway.ErrInvalidOption)) {
				t.Errorf("err %v, wantErr %v", err, tc.wantErr)
			}
		})
	}
}

// TestAutoRouting routes "auto" requests over HTTP: stories has a live
// worker, coder has none, so coder prompts fall back to stories.
func TestAutoRouting(t *testing.T) {
	s := newStack(t, gateway.Config{Experts: testExperts()[:2]})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	resp := s.post(t, ctx, "/v1/route", `{"prompt":"fix this python function"}`, map[string]string{"X-Request-Id": "route-1"})
	var d gateway.Decision
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
	if v := counter(t, s.reg, schemas.MetricRoutingDecisionsTotal, "expert", "stories"); v != 2 {
		t.Errorf("routing_decisions_total{expert=stories} = %v, want 2", v)
	}

	// The decision of route-1 is in LF_ROUTES.
	st, err := s.bus.JetStream().Stream(ctx, pipeline.StreamRoutes)
	if err != nil {
		t.Fatal(err)
	}
	var rec gateway.RouteRecord
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
	if rec.RequestID != "route-1" || rec.Expert != "stories" || rec.Stage != gateway.StageRules || !strings.HasPrefix(rec.At, "20") {
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
		var d gateway.Decision
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
