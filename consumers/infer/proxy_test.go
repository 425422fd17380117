package infer_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/largeforge/largeforge/consumers/infer"
	"github.com/largeforge/largeforge/internal/promreg/promregtest"
	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/model"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/producers/gateway"
	"github.com/largeforge/largeforge/producers/submit"
	"github.com/largeforge/largeforge/schemas"
)

// remoteGateway starts a second bus with an infer worker serving
// stories260K as "stories" and a real gateway over it; it returns the
// gateway's base URL.
func remoteGateway(t *testing.T) string {
	t.Helper()
	m, tok := stories(t)
	_, bus := pipelinetest.StartBus(t)
	log := pipelinetest.Logger(t)
	reg := prometheus.NewRegistry()
	ctx, cancel := context.WithCancel(context.Background())
	w, err := infer.Start(ctx, bus, []infer.ModelInput{{Name: "stories", Model: m, Tok: tok}},
		infer.Config{Slots: 4, HeartbeatEvery: time.Second, MaxWait: 100 * time.Millisecond}, log, reg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	g, err := gateway.New(ctx, bus, gateway.Config{}, log, reg, reg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- g.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("remote gateway: %v", err)
		}
		if err := w.Wait(); err != nil {
			t.Errorf("remote workers: %v", err)
		}
	})
	return "http://" + ln.Addr().String()
}

// flakyFront forwards to target while up is true; otherwise it drops each
// connection without an answer, as an unreachable server does.
func flakyFront(t *testing.T, target string, up *atomic.Bool) string {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if up.Load() {
			rp.ServeHTTP(w, r)
			return
		}
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			_ = conn.Close()
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestProxyBatchJob: the rows of a batch job addressed to an endpoint
// expert are served by its proxy worker against a second, real gateway.
// While the endpoint is unreachable the rows are retried, not lost (the job
// stays in progress with nothing done); once it answers, the rows complete
// with the remote model's output and a row the endpoint refuses with a 4xx
// becomes an error row.
func TestProxyBatchJob(t *testing.T) {
	var up atomic.Bool
	front := flakyFront(t, remoteGateway(t), &up)
	s := newStack(t)
	// max_tokens 4096 is the expert's context; the remote model's is 2048,
	// so the endpoint itself refuses the row "over" with a 400.
	e := schemas.ExpertConfig{Name: "remote", ModelPath: "stories", Endpoint: front + "/v1", MaxTokens: 4096}
	ctx, cancel := context.WithCancel(context.Background())
	w, err := infer.StartProxy(ctx, s.bus, e, 30*time.Second,
		infer.Config{WorkerID: "proxy-remote", Slots: 4, MaxDeliver: 1000, AckWait: 5 * time.Second, NakDelay: 50 * time.Millisecond,
			MaxWait: 100 * time.Millisecond, HeartbeatEvery: time.Second}, pipelinetest.Logger(t), s.reg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		if err := w.Wait(); err != nil {
			t.Errorf("proxy: %v", err)
		}
	})

	var lines []string
	for i, p := range prompts[:3] {
		lines = append(lines, fmt.Sprintf(`{"custom_id":"r%d","prompt":%q,"max_tokens":8,"temperature":0}`, i, p))
	}
	lines = append(lines, `{"custom_id":"over","prompt":"Once upon a time","max_tokens":3000,"temperature":0}`)
	in := filepath.Join(t.TempDir(), "in.jsonl")
	if err := os.WriteFile(in, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sub, err := submit.New(ctx, s.bus, submit.Config{Model: "remote"}, pipelinetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	sum, err := sub.Submit(ctx, in, nil)
	if err != nil || sum.Published != 4 {
		t.Fatalf("submit %+v: %v", sum, err)
	}

	// Unreachable: every row is tried, then tried again; none is settled.
	pipelinetest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		if got := promregtest.Value(t, s.reg, "inference_requests_total", "status", infer.StatusRetry); got < 8 {
			return fmt.Errorf("%v retries", got)
		}
		return nil
	})
	j, err := s.store.Get(ctx, sum.Job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if j.Status != jobs.StatusInProgress || j.RequestCounts.Completed != 0 || j.RequestCounts.Failed != 0 {
		t.Fatalf("job while the endpoint is unreachable: %s %+v", j.Status, j.RequestCounts)
	}

	up.Store(true)
	j = s.wait(t, sum.Job.ID, jobs.StatusCompleted)
	if j.RequestCounts != (jobs.Counts{Total: 4, Completed: 3, Failed: 1}) {
		t.Errorf("counts %+v", j.RequestCounts)
	}
	out := outputs(t, j)
	m, tok := stories(t)
	gen, err := model.NewTextGenerator(m, tok)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range prompts[:3] {
		want, err := gen.Generate(ctx, []model.TextRequest{{Prompt: p, Params: model.SamplingParams{MaxTokens: 8, Temperature: 0}}})
		if err != nil {
			t.Fatal(err)
		}
		l := out[fmt.Sprintf("r%d", i)]
		if l.Response == nil || l.Response.StatusCode != http.StatusOK {
			t.Errorf("row r%d: %+v", i, l)
			continue
		}
		var body schemas.CompletionResponse
		if err := json.Unmarshal(l.Response.Body, &body); err != nil {
			t.Fatal(err)
		}
		if body.Model != "remote" || len(body.Choices) != 1 || body.Choices[0].Text != want[0].Text {
			t.Errorf("row r%d: %+v, want the remote model's %q", i, body, want[0].Text)
		}
	}
	if l := out["over"]; l.Error == nil || l.Error.Code != schemas.CodeModelError || !strings.HasPrefix(l.Error.Message, "Invalid max_tokens: 3000 is over the limit of ") {
		t.Errorf("row refused by the endpoint: %+v", l)
	}
}
