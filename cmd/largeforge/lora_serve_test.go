package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/largeforge/largeforge/consumers/resultsink"
	"github.com/largeforge/largeforge/model/checkpoint"
	"github.com/largeforge/largeforge/model/loratest"
	mtrain "github.com/largeforge/largeforge/model/train"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/producers/gateway"
	"github.com/largeforge/largeforge/schemas"
)

// TestLoRAServedUnmergedEndToEnd: an adapter pushed to lf_models (model
// push legal-adapter DIR, as admin) is served unmerged by one infer worker
// on the infer credential (worker --model base=DIR --model merged=DIR
// --lora legal=base:legal-adapter --model-cache C), which fetches it into
// C. The heartbeat names base, merged and legal at the capacity of two
// batchers. Then, each answer of legal equals the merged model's (adapters
// merge of the same adapter) and differs from the base's:
//   - an auto batch job (submit role) whose rows name legal, base and
//     merged, and one routed to the expert legal of lf_experts (an expert
//     names the model id it is served as: here the adapter's);
//   - a score job for legal against one for merged (within float tolerance);
//   - the gateway (api role): /v1/models lists legal; a chat completion
//     naming legal, and one naming auto routed to legal.
func TestLoRAServedUnmergedEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("serves an adapter through the worker, batch jobs and the gateway")
	}
	base, e, admin, ctx := tinyOnRoles(t)
	log := pipelinetest.Logger(t)
	cfg, err := checkpoint.LoadConfig(base)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkpoint.SetChatTemplate(base, "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"); err != nil {
		t.Fatal(err)
	}
	adapter, merged := filepath.Join(t.TempDir(), "adapter"), filepath.Join(t.TempDir(), "merged")
	if err := loratest.Write(cfg, adapter, loratest.Spec{R: 4, Alpha: 8, Modules: []string{"q_proj", "v_proj", "down_proj"}, Seed: 7}); err != nil {
		t.Fatal(err)
	}
	if err := mtrain.MergeAdapter(base, adapter, merged); err != nil {
		t.Fatal(err)
	}
	as := func(ctx context.Context, role string, args ...string) (string, error) {
		return runCLIAs(t, ctx, e, role, args...)
	}
	must := mustAs(t, ctx, e)
	digest := strings.Fields(must("admin", "model", "push", "legal-adapter", adapter))[2]
	expert, _ := json.Marshal(schemas.ExpertConfig{Name: "legal", ModelPath: "legal-adapter", Keywords: []string{"contract"}, Priority: 1, MaxTokens: 256})
	ekv, err := admin.KV(ctx, pipeline.BucketExperts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ekv.Put(ctx, "legal", expert); err != nil {
		t.Fatal(err)
	}

	startResultsSinkAs(t, ctx, e, log)
	cache := t.TempDir()
	wctx, wstop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := as(wctx, "infer", "worker", "--worker-id", "lora", "--slots", "4", "--model", "base="+base, "--model", "merged="+merged,
			"--lora", "legal=base:legal-adapter", "--model-cache", cache)
		done <- err
	}()
	t.Cleanup(func() {
		wstop()
		if err := <-done; err != nil {
			t.Errorf("infer worker: %v", err)
		}
	})
	waitLive(t, admin, "legal", time.Minute)
	if _, err := os.Stat(filepath.Join(cache, "legal-adapter", digest, mtrain.AdapterWeightsFile)); err != nil {
		t.Errorf("the pushed adapter is not in --model-cache: %v", err)
	}
	wkv, err := admin.KV(ctx, pipeline.BucketWorkers)
	if err != nil {
		t.Fatal(err)
	}
	var hb schemas.Heartbeat
	if entry, err := wkv.Get(ctx, schemas.HeartbeatKey(schemas.WorkerInfer, "lora")); err != nil || json.Unmarshal(entry.Value, &hb) != nil {
		t.Fatalf("heartbeat: %v", err)
	}
	if strings.Join(hb.Models, ",") != "base,merged,legal" || hb.Capacity != 2*4 {
		t.Errorf("heartbeat %+v: want base, merged, legal at the capacity of 2 batchers of 4 slots", hb)
	}

	// A batch job mixing the adapter, the base and the merged model, and a routed row.
	prompts := []string{"Once upon a time", "Colour 3?"}
	var rows []string
	for i, p := range prompts {
		for _, m := range []string{"legal", "base", "merged"} {
			rows = append(rows, fmt.Sprintf(`{"custom_id":"%s%d","model":"%s","prompt":%q,"max_tokens":8,"temperature":0}`, m, i, m, p))
		}
	}
	const routed = "Sign the contract"
	rows = append(rows, fmt.Sprintf(`{"custom_id":"auto","model":"auto","prompt":%q,"max_tokens":8,"temperature":0}`, routed),
		fmt.Sprintf(`{"custom_id":"mergedauto","model":"merged","prompt":%q,"max_tokens":8,"temperature":0}`, routed))
	texts := map[string]string{}
	for _, l := range batchJob(t, must, strings.Join(rows, "\n"), "--model", "auto") {
		var r schemas.CompletionResponse
		if l.Response == nil || l.Response.StatusCode != 200 || json.Unmarshal(l.Response.Body, &r) != nil || len(r.Choices) != 1 {
			t.Fatalf("row %s: %+v %+v", l.CustomID, l.Response, l.Error)
		}
		texts[l.CustomID] = r.Choices[0].Text
		if want := strings.TrimRight(l.CustomID, "0123456789"); want != "auto" && want != "mergedauto" && r.Model != want {
			t.Errorf("row %s answered by %s", l.CustomID, r.Model)
		} else if l.CustomID == "auto" && r.Model != "legal" {
			t.Errorf("the routed row went to %s, want the expert legal", r.Model)
		}
	}
	for i := range prompts {
		if l, m, b := texts[fmt.Sprint("legal", i)], texts[fmt.Sprint("merged", i)], texts[fmt.Sprint("base", i)]; l != m || l == b {
			t.Errorf("prompt %q: legal %q, merged %q, base %q: want legal = merged != base", prompts[i], l, m, b)
		}
	}
	if texts["auto"] != texts["mergedauto"] {
		t.Errorf("routed to legal %q, merged %q", texts["auto"], texts["mergedauto"])
	}

	// Score rows for the adapter id equal the merged model's.
	scoreRows := `{"custom_id":"t","text":"Once upon a time there was a cat."}` + "\n" + `{"custom_id":"pc","prompt":"Colour","completion":" 3 is red"}`
	scores := func(model string) map[string]schemas.ScoreOutput {
		out := map[string]schemas.ScoreOutput{}
		for _, l := range batchJob(t, must, scoreRows, "--model", model, "--kind", "score") {
			var s schemas.ScoreOutput
			if l.Response == nil || json.Unmarshal(l.Response.Body, &s) != nil || s.Tokens == 0 {
				t.Fatalf("score row %s of %s: %+v %+v", l.CustomID, model, l.Response, l.Error)
			}
			out[l.CustomID] = s
		}
		return out
	}
	sl, sm := scores("legal"), scores("merged")
	for id, m := range sm {
		if l := sl[id]; l.Tokens != m.Tokens || math.Abs(l.SumLogprob-m.SumLogprob) > 1e-3*max(1, math.Abs(m.SumLogprob)) {
			t.Errorf("score row %s: legal %+v, merged %+v", id, l, m)
		}
	}

	// The gateway lists the adapter and answers for it by name and routed.
	reg := prometheus.NewRegistry()
	g, err := gateway.New(ctx, pipelinetest.ConnectRole(t, e, "api", log), gateway.Config{}, log, reg, reg)
	if err != nil {
		t.Fatal(err)
	}
	url := serveGateway(t, ctx, g)
	var list struct{ Data []gateway.ModelInfo }
	if status := getJSON(t, url+"/v1/models", &list); status != 200 || !strings.Contains(fmt.Sprint(list.Data), "{legal model") {
		t.Errorf("/v1/models: %d %+v, want legal listed", status, list.Data)
	}
	chat := func(model, content string) (string, string) {
		t.Helper()
		var r struct {
			Model   string
			Choices []struct{ Message struct{ Content string } }
			Error   struct{ Message string }
		}
		body := map[string]any{"model": model, "messages": []map[string]string{{"role": "user", "content": content}}, "max_tokens": 8, "temperature": 0}
		if status := postJSON(t, url+"/v1/chat/completions", body, &r); status != 200 || len(r.Choices) != 1 {
			t.Fatalf("chat completion of %s: %d %+v", model, status, r)
		}
		return r.Model, r.Choices[0].Message.Content
	}
	_, want := chat("merged", "Colour 3?")
	if got, text := chat("legal", "Colour 3?"); got != "legal" || text != want {
		t.Errorf("chat with legal: %s %q, merged %q", got, text, want)
	}
	_, want = chat("merged", routed)
	if got, text := chat("auto", routed); got != "legal" || text != want {
		t.Errorf("chat with auto: routed to %s %q, merged %q; want legal", got, text, want)
	}
}

// runCLIAs is runCLI on role's credential of deploy/nats-roles.conf.
func runCLIAs(t *testing.T, ctx context.Context, e *pipeline.Embedded, role string, args ...string) (string, error) {
	return runCLI(t, ctx, append([]string{"--nats=" + e.ClientURL(), "--nats-user=" + role,
		"--nats-password=" + pipelinetest.RolePassword(role), "--log-level=error"}, args...)...)
}

// batchJob submits rows (JSONL) with the submit credential, waits for the
// job and returns its output lines.
func batchJob(t *testing.T, must func(string, ...string) string, rows string, args ...string) []schemas.OutputLine {
	t.Helper()
	in := filepath.Join(t.TempDir(), "rows.jsonl")
	if err := os.WriteFile(in, []byte(rows+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	id := strings.TrimSpace(strings.Split(must("submit", append([]string{"submit", in, "--wait", "--progress", "off"}, args...)...), "\n")[0])
	out := filepath.Join(t.TempDir(), "output.jsonl")
	must("submit", "jobs", "results", id, "-o", out)
	lines, err := resultsink.ReadOutput(out)
	if err != nil || len(lines) != strings.Count(rows, "\n")+1 {
		t.Fatalf("job %s: %d output lines, %v", id, len(lines), err)
	}
	return lines
}

// getJSON gets url and decodes its JSON body into v; it returns the status.
func getJSON(t *testing.T, url string, v any) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	return decodeBody(t, resp, v)
}

// postJSON posts body as JSON and decodes the answer into v; it returns the status.
func postJSON(t *testing.T, url string, body, v any) int {
	t.Helper()
	data, _ := json.Marshal(body)
	resp, err := http.Post(url, "application/json", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	return decodeBody(t, resp, v)
}

func decodeBody(t *testing.T, resp *http.Response, v any) int {
	t.Helper()
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatalf("%d %s: %v", resp.StatusCode, raw, err)
	}
	return resp.StatusCode
}
