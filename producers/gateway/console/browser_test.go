package console_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/largeforge/largeforge/consumers/datasetsink"
	"github.com/largeforge/largeforge/consumers/infer"
	"github.com/largeforge/largeforge/consumers/resultsink"
	"github.com/largeforge/largeforge/consumers/train"
	"github.com/largeforge/largeforge/consumers/train/traintest"
	"github.com/largeforge/largeforge/dataset"
	"github.com/largeforge/largeforge/jobs"
	mtrain "github.com/largeforge/largeforge/model/train"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/producers/gateway"
	"github.com/largeforge/largeforge/producers/ingest"
	"github.com/largeforge/largeforge/producers/submit"
	"github.com/largeforge/largeforge/routing/routingtest"
	"github.com/largeforge/largeforge/schemas"
	"github.com/largeforge/largeforge/storage"
	"github.com/largeforge/largeforge/storage/modelstore"
)

// chromium returns the path of a Chromium or Chrome binary; without one the
// test skips, unless LARGEFORGE_REQUIRE_CHROMIUM=1 (CI), where it fails.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("LARGEFORGE_REQUIRE_CHROMIUM") == "1" {
		t.Fatal("no chromium on PATH and LARGEFORGE_REQUIRE_CHROMIUM=1 (apt-get install chromium)")
	}
	t.Skip("no chromium on PATH (apt-get install chromium; LARGEFORGE_REQUIRE_CHROMIUM=1 makes this a failure)")
	return ""
}

// browserStack is the real stack the console shows: an embedded bus, the
// dataset and results sinks on the object store, the gateway with an API
// key and an expert, and (started by the test when it wants) an infer
// worker on the tiny model and a train worker.
type browserStack struct {
	bus   *pipeline.Bus
	store *jobs.Store
	fx    traintest.Fixture
	url   string
	log   zerolog.Logger
}

const browserKey = "sk-console-browser-test"

func startBrowserStack(t *testing.T) *browserStack {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	log := pipelinetest.Logger(t)
	_, bus := pipelinetest.StartBus(t)
	objects, err := storage.OpenObjects(ctx, bus, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ds, err := datasetsink.StartStore(ctx, bus, objects, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := resultsink.StartStore(ctx, bus, objects, resultsink.Options{SweepEvery: 200 * time.Millisecond, MaxWait: 100 * time.Millisecond}, log)
	if err != nil {
		t.Fatal(err)
	}
	wg.Add(2)
	go func() { defer wg.Done(); _ = ds.Wait() }()
	go func() { defer wg.Done(); _ = rs.Wait() }()
	gw, err := gateway.New(ctx, bus, gateway.Config{APIKeys: []string{browserKey},
		Experts: []schemas.ExpertConfig{routingtest.Expert("tiny", 0, []string{"colour"}, nil)}}, log, prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	wg.Add(1)
	go func() { defer wg.Done(); _ = gw.Serve(ctx, ln) }()
	store, err := jobs.Open(ctx, bus)
	if err != nil {
		t.Fatal(err)
	}
	return &browserStack{bus: bus, store: store, fx: traintest.New(t, 16), url: "http://" + ln.Addr().String(), log: log}
}

// startInfer starts an infer worker serving the fixture's tiny model as "tiny".
func (s *browserStack) startInfer(t *testing.T) string {
	t.Helper()
	m, tok, err := infer.Load("tiny", s.fx.Base, infer.Config{}, s.log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w, err := infer.Start(ctx, s.bus, []infer.ModelInput{{Name: "tiny", Model: m, Tok: tok}},
		infer.Config{Slots: 4, WorkerID: "console-infer", MaxWait: 100 * time.Millisecond, NakDelay: 100 * time.Millisecond, HeartbeatEvery: time.Second},
		s.log, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = w.Wait() })
	return w.ID
}

func (s *browserStack) startTrain(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w, err := train.Start(ctx, s.bus, train.Config{WorkerID: "console-train", MaxWait: 100 * time.Millisecond, HeartbeatEvery: time.Second}, s.log, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = w.Wait() })
}

func (s *browserStack) submit(t *testing.T, model string, lines ...string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "in.jsonl")
	if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sub, err := submit.New(context.Background(), s.bus, submit.Config{Model: model}, s.log)
	if err != nil {
		t.Fatal(err)
	}
	sum, err := sub.Submit(context.Background(), p, nil)
	if err != nil {
		t.Fatal(err)
	}
	return sum.Job.ID
}

// browser is a headless Chromium tab; shot saves a full-page PNG.
type browser struct {
	t   *testing.T
	ctx context.Context
	dir string
	n   int
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	path := chromium(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.WindowSize(1280, 900), chromedp.UserDataDir(t.TempDir()))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelCtx(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil { // starts the browser on a context without a deadline
		t.Fatalf("start %s: %v", path, err)
	}
	dir := os.Getenv("LARGEFORGE_SCREENSHOTS")
	if dir == "" {
		dir = t.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return &browser{t: t, ctx: ctx, dir: dir}
}

// browserWait bounds one browser step: a guard against a hang, not a
// claim about speed.
const browserWait = 3 * time.Minute

func (b *browser) do(steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, browserWait)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.t.Fatalf("browser: %v", err)
	}
}

func (b *browser) text(sel string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, browserWait)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		b.t.Fatalf("text of %s: %v", sel, err)
	}
	return strings.TrimSpace(s)
}

func (b *browser) eval(expr string, out any) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, browserWait)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[json.RawMessage](expr))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", expr, err)
	}
	if err := json.Unmarshal(v, out); err != nil {
		b.t.Fatalf("evaluate %s: %s: %v", expr, v, err)
	}
}

// until waits for a JavaScript condition in the page.
func (b *browser) until(expr string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, browserWait+10*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(browserWait))); err != nil {
		var html string
		b.eval(`document.getElementById("main").innerText`, &html)
		b.t.Fatalf("waiting for %s: %v\npage: %s", expr, err, html)
	}
}

func (b *browser) open(url, ready string) {
	b.t.Helper()
	b.do(chromedp.Navigate(url))
	b.until(ready)
}

func (b *browser) shot(name string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, browserWait)
	defer cancel()
	buf, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	if _, err := png.Decode(bytes.NewReader(buf)); err != nil {
		b.t.Fatalf("screenshot %s is no PNG: %v", name, err)
	}
	b.n++
	p := filepath.Join(b.dir, fmt.Sprintf("%02d-%s.png", b.n, name))
	if err := os.WriteFile(p, buf, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("screenshot %s", p)
}

func q(s string) string { return strconv.Quote(s) }

// TestConsoleInBrowser drives headless Chromium through every console page
// against the real stack while a batch job and a training job run, and
// checks what the pages show against the job records, the manifest, the
// heartbeats, the training events and the routing decisions; the pages
// update without reloading (a marker set in the page survives until the
// job completes). It saves a screenshot of each page (LARGEFORGE_SCREENSHOTS
// names the directory; a temporary one otherwise).
func TestConsoleInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("drives a headless browser (make test runs it)")
	}
	b := newBrowser(t)
	s := startBrowserStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	// A dataset with two rejects of different rules.
	data := filepath.Join(t.TempDir(), "colours.jsonl")
	rows := []string{`{"instruction":"Sky?","output":"blue"}`, `{"instruction":"Grass?","output":"green"}`, `{"instruction":"Sun?","output":"gold"}`,
		`{"instruction":"bad json","output":`, `{"instruction":5,"output":"x"}`}
	if err := os.WriteFile(data, []byte(strings.Join(rows, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	icfg := ingest.DefaultConfig()
	icfg.Dataset, icfg.Format, icfg.Wait = "colours", "alpaca", time.Minute
	in, err := ingest.New(s.bus, icfg, s.log)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := in.Ingest(ctx, data, nil); err != nil {
		t.Fatal(err)
	}
	// A model in the store.
	ms, err := modelstore.New(ctx, s.bus)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ms.Push(ctx, "tiny-base", s.fx.Base); err != nil {
		t.Fatal(err)
	}
	// A batch job (one request over the context fails), a job to cancel
	// (no worker serves its model), a training job with evaluations; no
	// worker runs yet.
	batch := s.submit(t, "tiny", `{"custom_id":"a","prompt":"Sky?","max_tokens":4,"temperature":0}`,
		`{"custom_id":"b","prompt":"Grass?","max_tokens":4,"temperature":0}`,
		`{"custom_id":"c","prompt":"Sun?","max_tokens":4,"temperature":0}`,
		`{"custom_id":"over","prompt":"Sky?","max_tokens":100000}`)
	idle := s.submit(t, "nobody", `{"custom_id":"x","prompt":"hi","max_tokens":2}`)
	yaml := strings.Replace(s.fx.YAML(filepath.Join(t.TempDir(), "out"), 2, 100), "eval_steps: 100000\neval_split: 0\n", "eval_steps: 2\neval_split: 0.25\n", 1)
	// Warmup: step 1's learning rate is 0, which its event leaves out; the chart shows it.
	yaml = strings.Replace(yaml, "warmup_ratio: 0\n", "warmup_ratio: 0.5\n", 1)
	rc, err := mtrain.ParseRunConfig([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	tj, err := train.Submit(ctx, s.bus, s.store, rc, "console")
	if err != nil {
		t.Fatal(err)
	}

	// Jobs: the API key first, then the batch job still queued.
	base := s.url + "/console"
	b.open(base+"/jobs", `document.getElementById("apikey")`)
	b.shot("login")
	b.do(chromedp.SendKeys(chromedp.CSS("#apikey"), browserKey), chromedp.Click(chromedp.CSS("#login-submit")))
	row := fmt.Sprintf(`#jobs tr[data-id=%s]`, q(batch))
	b.until(fmt.Sprintf(`document.querySelector(%s)`, q(row)))
	if st := b.text(row + " .st"); st == "completed" {
		t.Fatalf("batch job shown %s before any worker ran", st)
	}
	var marker bool
	b.eval(`window.consoleMarker = true`, &marker)
	s.startInfer(t)
	b.until(fmt.Sprintf(`document.querySelector(%s)?.textContent === "completed"`, q(row+" .st")))
	b.eval(`window.consoleMarker === true`, &marker)
	if !marker {
		t.Error("the jobs page reloaded: live views must update in place")
	}
	rec, err := s.store.Get(ctx, batch)
	if err != nil {
		t.Fatal(err)
	}
	c := rec.RequestCounts
	for cell, want := range map[string]int{".c-completed": c.Completed, ".c-failed": c.Failed, ".c-total": c.Total} {
		if got := b.text(row + " " + cell); got != strconv.Itoa(want) {
			t.Errorf("jobs page %s = %q, record %d", cell, got, want)
		}
	}
	if c.Total != 4 || c.Failed != 1 {
		t.Errorf("record counts %+v, want 4 requests, 1 failed", c)
	}
	b.shot("jobs")

	// A job: its counts and its failed request.
	b.open(base+"/jobs/"+batch, `document.getElementById("request-errors")`)
	if got, want := b.text("#job-counts"), fmt.Sprintf("%d completed, %d failed, %d total", c.Completed, c.Failed, c.Total); got != want {
		t.Errorf("job page counts %q, want %q", got, want)
	}
	if got := b.text("#request-errors tbody tr td"); got != "over" {
		t.Errorf("failed request %q, want custom_id over", got)
	}
	b.shot("job")

	// Cancel from the console: the job's own cancel path.
	b.open(base+"/jobs/"+idle, `document.getElementById("cancel")`)
	b.do(chromedp.Click(chromedp.CSS("#cancel")))
	b.until(`["cancelling", "cancelled"].includes(document.querySelector("#job-status")?.textContent)`)
	if j, err := s.store.Get(ctx, idle); err != nil || (j.Status != jobs.StatusCancelling && j.Status != jobs.StatusCancelled) {
		t.Errorf("after the console's cancel the record is %v (%v)", j.Status, err)
	}

	// Unknown ids and pages say so.
	for _, p := range []string{"/jobs/batch_000000000000000000000000", "/training/nope", "/datasets/nope", "/bogus"} {
		b.open(base+p, `document.getElementById("notfound")`)
		if got := b.text("#notfound"); !strings.Contains(got, "No ") {
			t.Errorf("%s: %q", p, got)
		}
	}
	b.shot("notfound")

	// Datasets: the manifest, rejects by rule with samples.
	kv, err := s.bus.KV(ctx, pipeline.BucketDatasets)
	if err != nil {
		t.Fatal(err)
	}
	var m dataset.Manifest
	pipelinetest.CheckFor(t, time.Minute, 50*time.Millisecond, func() error {
		e, err := kv.Get(ctx, "colours")
		if err != nil {
			return err
		}
		if err := json.Unmarshal(e.Value, &m); err != nil {
			return err
		}
		if m.Counts.Rows != 3 || m.Counts.Rejected != 2 {
			return fmt.Errorf("manifest counts %+v", m.Counts)
		}
		return nil
	})
	b.open(base+"/datasets", `document.querySelector("#datasets tr[data-name=colours]")`)
	if got := b.text(`#datasets tr[data-name=colours] .rows`); got != "3" {
		t.Errorf("datasets page rows %q", got)
	}
	b.open(base+"/datasets/colours", `document.querySelector("#rejects tr[data-rule] .sample")`)
	for rule, n := range m.Counts.RejectedByRule {
		sel := fmt.Sprintf(`#rejects tr[data-rule=%s]`, q(rule))
		if got := b.text(sel + " .count"); got != strconv.FormatInt(n, 10) {
			t.Errorf("rule %s: %q rejects shown, manifest %d", rule, got, n)
		}
		var samples int
		b.eval(fmt.Sprintf(`document.querySelectorAll(%s).length`, q(sel+" .sample")), &samples)
		if samples == 0 {
			t.Errorf("rule %s: no sample shown", rule)
		}
	}
	if got := b.text("#parts tbody tr td"); got != m.Parts[0].File {
		t.Errorf("first part %q, manifest %q", got, m.Parts[0].File)
	}
	b.shot("dataset")

	// Training: the run's page follows it live, curves from LF_EVENTS.
	run := base + "/training/" + tj.ID
	b.open(run, `document.getElementById("run-status")`)
	b.eval(`window.consoleMarker = true`, &marker)
	s.startTrain(t)
	b.until(`document.querySelector("#run-status")?.textContent === "completed" && document.querySelector("#loss-chart polyline.s1")`)
	b.eval(`window.consoleMarker === true`, &marker)
	if !marker {
		t.Error("the training page reloaded: live views must update in place")
	}
	tr, err := s.store.Get(ctx, tj.ID)
	if err != nil {
		t.Fatal(err)
	}
	// The last events may land after the record completes: wait for the chart to show them all.
	b.until(fmt.Sprintf(`document.querySelector("#loss-chart polyline.s0")?.dataset.points === "%d"`, tr.Training.MaxSteps))
	var points map[string]string
	b.eval(`Object.fromEntries([...document.querySelectorAll(".chart polyline")].map(p => [p.closest(".chart").id + "/" + p.dataset.series, p.dataset.points]))`, &points)
	msgs, err := s.bus.Tail(ctx, pipeline.StreamEvents, "lf.events.train."+tj.ID, 10000)
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	for _, msg := range msgs {
		ev, err := schemas.DecodeTrainEvent(msg.Data)
		if err != nil {
			t.Fatal(err)
		}
		counts[ev.Kind]++
		if ev.Kind == schemas.TrainEventStep && ev.GlobalStep == 1 && ev.LearningRate != 0 {
			t.Errorf("step 1 under warmup has learning rate %v: the test wants the 0 rate the event leaves out", ev.LearningRate)
		}
	}
	want := map[string]string{"loss-chart/training loss": strconv.Itoa(counts["step"]), "loss-chart/evaluation loss": strconv.Itoa(counts["eval"]),
		"lr-chart/learning rate": strconv.Itoa(counts["step"])}
	for k, v := range want {
		if points[k] != v {
			t.Errorf("%s: %s points, %s events on the bus (all: %v)", k, points[k], v, points)
		}
	}
	if counts["step"] != tr.Training.MaxSteps || counts["eval"] == 0 {
		t.Errorf("events %v, record max_steps %d", counts, tr.Training.MaxSteps)
	}
	b.shot("training")
	b.open(base+"/training", fmt.Sprintf(`document.querySelector(%s)`, q(fmt.Sprintf(`#runs tr[data-id=%s]`, q(tj.ID)))))

	// Workers: heartbeats with models and slots.
	b.open(base+"/workers", `document.querySelector("#workers tr[data-id=console-infer]")`)
	if got := b.text(`#workers tr[data-id=console-infer] .models`); got != "tiny" {
		t.Errorf("infer worker models %q", got)
	}
	if got := b.text(`#workers tr[data-id=console-infer] .slots`); got != "4" {
		t.Errorf("infer worker slots %q, want 4", got)
	}
	b.shot("workers")

	// Experts: a routing decision made through the API shows up.
	req, _ := http.NewRequest("POST", s.url+"/v1/route", strings.NewReader(`{"prompt":"What colour is the sky?"}`))
	req.Header.Set("Authorization", "Bearer "+browserKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("route: %s", resp.Status)
	}
	b.open(base+"/experts", `document.querySelector("#experts tr[data-name=tiny]") && document.querySelector("#decisions td.expert")?.textContent === "tiny"`)
	if got := b.text(`#experts tr[data-name=tiny] .live`); got != "1" {
		t.Errorf("expert tiny live workers %q, want 1", got)
	}
	b.shot("experts")

	// Models in the store.
	b.open(base+"/models", `document.querySelector("#models tr[data-name=tiny-base]")`)
	b.shot("models")
}
