package submit_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/largeforge/largeforge/consumers/infer"
	"github.com/largeforge/largeforge/internal/testenv"
	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/model/tokenizer"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/producers/submit"
	"github.com/largeforge/largeforge/routing"
	"github.com/largeforge/largeforge/routing/routingtest"
	"github.com/largeforge/largeforge/schemas"
)

func testExpert(name string, keywords ...string) schemas.ExpertConfig {
	e := schemas.DefaultExpertConfig()
	e.Name, e.ModelPath, e.Keywords = name, "models/"+name, keywords
	return e
}

// testRouter routes between the experts code ("python") and stories
// ("story"), with a classifier trained on the sample routing rows for the
// prompts no keyword decides.
func testRouter(t *testing.T) *routing.Router {
	t.Helper()
	c := routingtest.SampleClassifier(t)
	r, err := routing.New([]schemas.ExpertConfig{testExpert("code", "python"), testExpert("stories", "story")}, routing.WithClassifier(c))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func routeRecords(t *testing.T, bus *pipeline.Bus, job string) map[string]schemas.RouteRecord {
	t.Helper()
	out := map[string]schemas.RouteRecord{}
	for _, m := range drain(t, bus, pipeline.StreamRoutes, "lf.route."+job) {
		var rec schemas.RouteRecord
		if err := json.Unmarshal(m.Data(), &rec); err != nil {
			t.Fatal(err)
		}
		out[strings.TrimPrefix(rec.RequestID, job+"/")] = rec
	}
	return out
}

// TestSubmitAuto submits a job with model "auto" against infer workers
// serving two experts (stories260K under the names code and stories): each
// row is answered by the expert the router chose, and every decision is in
// LF_ROUTES.
func TestSubmitAuto(t *testing.T) {
	// With a ChatML chat_template: the "bed" row is a chat.
	dir := testenv.WithChatTemplate(t, filepath.Dir(testenv.SharedFile(t, "models/stories260K/model.safetensors")), tokenizer.ChatMLJinja)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, bus := pipelinetest.StartBus(t)
	wctx, stop := context.WithCancel(ctx)
	w, err := infer.StartDirs(wctx, bus, map[string]string{"code": dir, "stories": dir},
		infer.Config{Slots: 2, MaxWait: 50 * time.Millisecond, HeartbeatEvery: time.Second}, pipelinetest.Logger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stop()
		if err := w.Wait(); err != nil {
			t.Error(err)
		}
	})
	in := write(t, "auto.jsonl", strings.Join([]string{
		`{"custom_id":"py","prompt":"fix this python function","max_tokens":2,"temperature":0}`,
		`{"custom_id":"tale","prompt":"Tell me a story about a cat","max_tokens":2,"temperature":0}`,
		`{"custom_id":"go","prompt":"Why does my golang handler crash with a nil pointer?","max_tokens":2,"temperature":0}`,
		`{"custom_id":"bed","messages":[{"role":"user","content":"Imagine a sleepy bear on an adventure in a magic forest."}],"max_tokens":2,"temperature":0}`,
		`{"custom_id":"named","model":"stories","prompt":"python","max_tokens":2,"temperature":0}`,
		`{"custom_id":"badname","model":"a.b","prompt":"x"}`,
	}, "\n"))
	s, err := submit.New(ctx, bus, submit.Config{Model: submit.AutoModel, Router: testRouter(t)}, pipelinetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	sum, err := s.Submit(ctx, in, nil)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Published != 5 || sum.Rejected != 1 || sum.Routed["code"] != 2 || sum.Routed["stories"] != 2 {
		t.Errorf("summary %+v", sum)
	}
	job := sum.Job.ID
	want := map[string]string{"py": "code", "tale": "stories", "go": "code", "bed": "stories", "named": "stories"}
	got := map[string]schemas.Result{}
	pipelinetest.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		for _, m := range drain(t, bus, pipeline.StreamResults, "lf.res."+job) {
			r, err := schemas.DecodeResult(m.Data())
			if err != nil {
				return err
			}
			if r.CustomID != "" {
				got[r.CustomID] = r
			}
		}
		if len(got) < len(want)+1 {
			return fmt.Errorf("%d of %d results", len(got), len(want)+1)
		}
		return nil
	})
	for id, expert := range want {
		r := got[id]
		resp, err := r.DecodeResponse()
		if r.Error != nil || r.Model != expert || err != nil || resp.Model != expert {
			t.Errorf("%s: result %+v (error %+v, response %v), want answered by %s", id, r, r.Error, err, expert)
		}
	}
	if r := got["badname"]; r.Error == nil || r.Error.Code != schemas.CodeInvalidRequest {
		t.Errorf("badname: %+v", r)
	}
	recs := routeRecords(t, bus, job)
	wantStage := map[string]string{"py": routing.StageRules, "tale": routing.StageRules, "go": routing.StageClassifier, "bed": routing.StageClassifier}
	if len(recs) != len(wantStage) {
		t.Errorf("%d route records %+v, want %d", len(recs), recs, len(wantStage))
	}
	for id, stage := range wantStage {
		if rec := recs[id]; rec.Stage != stage || rec.Expert != want[id] || rec.Confidence <= 0 || len(rec.Alternatives) != 1 {
			t.Errorf("%s: route record %+v, want %s by %s", id, rec, want[id], stage)
		}
	}
}

// TestSubmitAutoRows routes the rows whose model is "auto" inside a job of
// a named model (no workers needed: the requests wait on their subjects).
func TestSubmitAutoRows(t *testing.T) {
	ctx := context.Background()
	_, bus := pipelinetest.StartBus(t)
	in := write(t, "rows.jsonl", strings.Join([]string{
		`{"custom_id":"a","model":"auto","prompt":"fix this python function"}`,
		`{"custom_id":"b","prompt":"no model: the job's"}`,
		`{"custom_id":"c","model":"auto","prompt":"a story"}`,
		`{"custom_id":"d","model":"code","prompt":"another model than the job's"}`,
	}, "\n"))
	tests := []struct {
		name         string
		router       *routing.Router
		wantCode     int // requests on lf.req.<job>.code
		wantStories  int
		wantRejected int
	}{
		{name: "with a router", router: testRouter(t), wantCode: 1, wantStories: 2, wantRejected: 1},
		{name: "without a router: auto rows are rejected", wantStories: 1, wantRejected: 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := submit.New(ctx, bus, submit.Config{Model: "stories", Router: tc.router}, pipelinetest.Logger(t))
			if err != nil {
				t.Fatal(err)
			}
			sum, err := s.Submit(ctx, in, nil)
			if err != nil {
				t.Fatal(err)
			}
			code := drain(t, bus, pipeline.StreamRequests, "lf.req."+sum.Job.ID+".code")
			stories := drain(t, bus, pipeline.StreamRequests, "lf.req."+sum.Job.ID+".stories")
			if len(code) != tc.wantCode || len(stories) != tc.wantStories || sum.Rejected != tc.wantRejected {
				t.Errorf("code %d stories %d rejected %d; summary %+v", len(code), len(stories), sum.Rejected, sum)
			}
			for _, m := range code {
				var req schemas.Request
				if err := json.Unmarshal(m.Data(), &req); err != nil {
					t.Fatal(err)
				}
				if req.Model != "code" || req.Completion.Model != "code" || req.CustomID != "a" {
					t.Errorf("request on code: %+v", req)
				}
			}
		})
	}
}

func TestAutoConfig(t *testing.T) {
	r := testRouter(t)
	tests := []struct {
		name    string
		cfg     submit.Config
		wantErr error
	}{
		{name: "auto with a router", cfg: submit.Config{Model: "auto", Router: r}},
		{name: "auto without a router", cfg: submit.Config{Model: "auto"}, wantErr: submit.ErrInvalidOption},
		{name: "auto score job", cfg: submit.Config{Model: "auto", Kind: jobs.KindScore, Router: r}, wantErr: submit.ErrInvalidOption},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.cfg.Validate(); !errors.Is(err, tc.wantErr) {
				t.Errorf("err %v, want %v", err, tc.wantErr)
			}
		})
	}
}
