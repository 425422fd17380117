package infer_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/largeforge/largeforge/consumers/infer"
	"github.com/largeforge/largeforge/consumers/resultsink"
	"github.com/largeforge/largeforge/internal/promreg/promregtest"
	"github.com/largeforge/largeforge/internal/testenv"
	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/model"
	"github.com/largeforge/largeforge/model/tokenizer"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/producers/submit"
	"github.com/largeforge/largeforge/schemas"
	"github.com/largeforge/largeforge/serve"
	"github.com/largeforge/largeforge/storage"
)

var (
	storiesOnce sync.Once
	storiesM    *model.Model
	storiesTok  *tokenizer.Tokenizer
	storiesErr  error
)

// stories loads stories260K once for the test binary.
func stories(t testing.TB) (*model.Model, *tokenizer.Tokenizer) {
	t.Helper()
	dir := filepath.Dir(testenv.SharedFile(t, "models/stories260K/model.safetensors"))
	storiesOnce.Do(func() {
		storiesM, storiesTok, storiesErr = infer.Load("stories", dir, infer.Config{}, pipelinetest.Logger(t))
	})
	if storiesErr != nil {
		t.Fatal(storiesErr)
	}
	return storiesM, storiesTok
}

type stack struct {
	bus     *pipeline.Bus
	store   *jobs.Store
	dataDir string
	objects *storage.Objects // lf_artifacts, where the sink stores
	reg     *prometheus.Registry
	// stopSink stops the results sink (also done in t.Cleanup).
	stopSink func()
}

func newStack(t testing.TB) *stack {
	t.Helper()
	_, bus := pipelinetest.StartBus(t)
	return newStackOn(t, bus)
}

// newStackOn is newStack on bus, whose topology is applied.
func newStackOn(t testing.TB, bus *pipeline.Bus) *stack {
	t.Helper()
	store, _ := jobs.Open(context.Background(), bus)
	s := &stack{bus: bus, store: store, dataDir: t.TempDir(), reg: prometheus.NewRegistry()}
	ctx, cancel := context.WithCancel(context.Background())
	// As `up` runs it: parts and final files in lf_artifacts, the final
	// files mirrored to <data dir>/jobs.
	objects, err := storage.OpenObjects(ctx, bus, "")
	if err != nil {
		t.Fatal(err)
	}
	s.objects = objects
	mirror, err := storage.NewLocal(storage.Dirs{Jobs: filepath.Join(s.dataDir, "jobs")})
	if err != nil {
		t.Fatal(err)
	}
	w, err := resultsink.StartStore(ctx, bus, objects, resultsink.Options{SweepEvery: 200 * time.Millisecond, MaxWait: 100 * time.Millisecond, Mirror: mirror}, pipelinetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	s.stopSink = func() {
		once.Do(func() {
			cancel()
			if err := w.Wait(); err != nil {
				t.Errorf("sink: %v", err)
			}
		})
	}
	t.Cleanup(s.stopSink)
	return s
}

// worker starts an infer worker serving stories260K as "stories".
func (s *stack) worker(t testing.TB, slots int) (stop func()) {
	t.Helper()
	return s.workerID(t, slots, "")
}

// workerID starts a worker with the given id (empty: the default).
func (s *stack) workerID(t testing.TB, slots int, id string) (stop func()) {
	t.Helper()
	m, tok := stories(t)
	ctx, cancel := context.WithCancel(context.Background())
	w, err := infer.Start(ctx, s.bus, []infer.ModelInput{{Name: "stories", Model: m, Tok: tok}},
		infer.Config{Slots: slots, WorkerID: id, AckWait: 5 * time.Second, MaxWait: 100 * time.Millisecond, NakDelay: 100 * time.Millisecond, HeartbeatEvery: time.Second},
		pipelinetest.Logger(t), s.reg)
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := w.Wait(); err != nil {
				t.Errorf("infer workers: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func (s *stack) submit(t testing.TB, kind, content string) submit.Summary {
	t.Helper()
	p := filepath.Join(t.TempDir(), "in.jsonl")
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	sub, err := submit.New(context.Background(), s.bus, submit.Config{Model: "stories", Kind: kind}, pipelinetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	sum, err := sub.Submit(context.Background(), p, nil)
	if err != nil {
		t.Fatal(err)
	}
	return sum
}

func (s *stack) wait(t testing.TB, id string, want jobs.Status) jobs.Job {
	t.Helper()
	return s.waitFor(t, id, want, 60*time.Second)
}

func (s *stack) waitFor(t testing.TB, id string, want jobs.Status, timeout time.Duration) jobs.Job {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	j, err := s.store.Watch(ctx, id, func(jobs.Job) bool { return true })
	if err != nil {
		t.Fatalf("wait for job %s: %v (last %+v)", id, err, j)
	}
	if j.Status != want {
		t.Fatalf("job %s ended %s, want %s: %+v", id, j.Status, want, j)
	}
	return j
}

func outputs(t testing.TB, j jobs.Job) map[string]schemas.OutputLine {
	t.Helper()
	lines, err := resultsink.ReadOutput(filepath.Join(j.Outputs.LocalDir, resultsink.FileOutput))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]schemas.OutputLine{}
	for _, l := range lines {
		if _, dup := out[l.CustomID]; dup {
			t.Errorf("custom_id %s twice in output.jsonl", l.CustomID)
		}
		out[l.CustomID] = l
	}
	return out
}

var prompts = []string{"Once upon a time", "The little dog", "Lily and Tom", "One day, a cat", "The sun was", "Sam had a big", "In the park", "Mom said"}

// A small completion job end to end: greedy outputs equal the model's direct
// TextGenerator output; a bad line and a duplicate custom_id become error
// rows and the job completes; a request delivered twice gives one row.
func TestCompletionJobEndToEnd(t *testing.T) {
	s := newStack(t)
	s.worker(t, 4)
	var lines []string
	for i, p := range prompts {
		lines = append(lines, fmt.Sprintf(`{"custom_id":"r%d","prompt":%q,"max_tokens":12,"temperature":0}`, i, p))
	}
	lines = append(lines,
		`{"custom_id":"bad","prompt":"x","max_tokens":0}`,
		`{"custom_id":"r0","prompt":"dup"}`,
		`{"custom_id":"chat","method":"POST","url":"/v1/chat/completions","body":{"model":"stories","messages":[{"role":"user","content":"Hi"}],"max_tokens":5,"temperature":0}}`,
		`{"custom_id":"stop","prompt":"Once upon a time","max_tokens":40,"temperature":0,"stop":["."]}`,
		// A poison request: longer than the model's context.
		`{"custom_id":"long","prompt":"`+strings.Repeat("dog ", 5000)+`","max_tokens":4}`,
		// A prompt plus max_tokens beyond the model's context (2048 tokens).
		`{"custom_id":"over","prompt":"Once upon a time","max_tokens":4000}`)
	sum := s.submit(t, jobs.KindCompletion, strings.Join(lines, "\n")+"\n")
	if sum.Published != 12 || sum.Rejected != 2 {
		t.Fatalf("submit %+v", sum)
	}
	// A redelivery the stream cannot dedupe (another message id): the sink writes one row.
	req, _ := json.Marshal(schemas.Request{Job: sum.Job.ID, CustomID: "r1", Kind: jobs.KindCompletion, Model: "stories",
		Completion: &schemas.CompletionRequest{Model: "stories", Prompt: prompts[1], MaxTokens: 12, TopP: 1}})
	subj, _ := pipeline.RequestSubject(sum.Job.ID, "stories")
	if _, err := s.bus.Publish(context.Background(), subj, req, "again", nil); err != nil {
		t.Fatal(err)
	}

	j := s.wait(t, sum.Job.ID, jobs.StatusCompleted)
	if j.RequestCounts != (jobs.Counts{Total: 14, Completed: 9, Failed: 5}) {
		t.Errorf("counts %+v", j.RequestCounts)
	}
	out := outputs(t, j)
	if len(out) != 14 {
		t.Errorf("%d output rows, want 14", len(out))
	}
	if l := out["long"]; l.Error == nil || l.Error.Code != schemas.CodeModelError || !strings.HasPrefix(l.Error.Message, "Invalid prompt: ") {
		t.Errorf("poison row %+v", l)
	}
	if l := out["over"]; l.Error == nil || l.Error.Code != schemas.CodeModelError || !strings.HasPrefix(l.Error.Message, "Invalid max_tokens: 4000 is over the limit of ") {
		t.Errorf("row over the context %+v", l)
	}

	m, tok := stories(t)
	gen, err := model.NewTextGenerator(m, tok)
	if err != nil {
		t.Fatal(err)
	}
	reqs := make([]model.TextRequest, len(prompts))
	for i, p := range prompts {
		reqs[i] = model.TextRequest{Prompt: p, Params: model.SamplingParams{MaxTokens: 12, Temperature: 0}}
	}
	reqs = append(reqs, model.TextRequest{Prompt: "Once upon a time", Stop: []string{"."}, Params: model.SamplingParams{MaxTokens: 40}})
	direct, err := gen.Generate(context.Background(), reqs)
	if err != nil {
		t.Fatal(err)
	}
	check := func(id string, want model.TextResult) {
		l, ok := out[id]
		if !ok || l.Response == nil || l.Response.StatusCode != 200 {
			t.Errorf("row %s: %+v", id, l)
			return
		}
		var body schemas.CompletionResponse
		if err := json.Unmarshal(l.Response.Body, &body); err != nil {
			t.Fatal(err)
		}
		c := body.Choices[0]
		if c.Text != want.Text || c.FinishReason != want.FinishReason || body.Usage.CompletionTokens != want.CompletionTokens || body.Usage.PromptTokens != want.PromptTokens {
			t.Errorf("row %s: got %q (%s, %+v), direct generate %q (%s, %d+%d)", id, c.Text, c.FinishReason, body.Usage, want.Text, want.FinishReason, want.PromptTokens, want.CompletionTokens)
		}
	}
	for i := range prompts {
		check(fmt.Sprintf("r%d", i), direct[i])
	}
	check("stop", direct[len(prompts)])
	if l := out["bad"]; l.Error == nil || l.Error.Message != "Invalid max_tokens" {
		t.Errorf("bad row %+v", l)
	}
	if l := out["r0#row10"]; l.Error == nil || l.Error.Code != schemas.CodeDuplicateID {
		t.Errorf("duplicate row %+v", l)
	}
	// stories has no chat_template: a chat request fails as in `generate`, no ChatML guessed.
	if l := out["chat"]; l.Error == nil || l.Error.Code != schemas.CodeInvalidRequest || !strings.Contains(l.Error.Message, tokenizer.ErrNoChatTemplate.Error()) {
		t.Errorf("chat row %+v, want the error %q", l, tokenizer.ErrNoChatTemplate)
	}
	if got := promregtest.Value(t, s.reg, "inference_requests_total", "", ""); got < 9 {
		t.Errorf("inference_requests_total = %v", got)
	}
}

// A score job: text, prompt+completion and DPO rows equal Model.Score.
func TestScoreJobEndToEnd(t *testing.T) {
	s := newStack(t)
	s.worker(t, 4)
	sum := s.submit(t, jobs.KindScore, strings.Join([]string{
		`{"custom_id":"t","text":"Once upon a time there was a dog."}`,
		`{"custom_id":"pc","prompt":"Once upon a time","completion":" there was a cat."}`,
		`{"custom_id":"dpo","prompt":"Lily saw","chosen":" a big dog.","rejected":" zzz qqq."}`,
		`{"custom_id":"empty"}`,
	}, "\n"))
	j := s.wait(t, sum.Job.ID, jobs.StatusCompleted)
	if j.RequestCounts != (jobs.Counts{Total: 4, Completed: 3, Failed: 1}) {
		t.Errorf("counts %+v", j.RequestCounts)
	}
	out := outputs(t, j)
	m, tok := stories(t)
	direct := func(in schemas.ScoreInput) []model.ScoreResult {
		r, err := m.Score(context.Background(), serve.ScoreRequests(tok, in))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	body := func(id string) schemas.ScoreOutput {
		var o schemas.ScoreOutput
		if l := out[id]; l.Response == nil || json.Unmarshal(l.Response.Body, &o) != nil {
			t.Fatalf("row %s: %+v", id, l)
		}
		return o
	}
	near := func(a, b float64) bool { return math.Abs(a-b) < 1e-4*(1+math.Abs(b)) }
	if d, o := direct(schemas.ScoreInput{Text: "Once upon a time there was a dog."})[0], body("t"); !near(o.SumLogprob, d.SumLogprob) || o.Tokens != d.Tokens {
		t.Errorf("text row %+v, direct %+v", o, d)
	}
	if d, o := direct(schemas.ScoreInput{Prompt: "Once upon a time", Completion: " there was a cat."})[0], body("pc"); !near(o.SumLogprob, d.SumLogprob) || !near(o.Perplexity, d.Perplexity) {
		t.Errorf("prompt+completion row %+v, direct %+v", o, d)
	}
	d := direct(schemas.ScoreInput{Prompt: "Lily saw", Chosen: " a big dog.", Rejected: " zzz qqq."})
	if o := body("dpo"); o.DPOMargin == nil || !near(*o.DPOMargin, model.DPOMargin(d[0], d[1])) || *o.DPOMargin <= 0 {
		t.Errorf("dpo row %+v, direct margin %v", o, model.DPOMargin(d[0], d[1]))
	}
}

// Cancel mid-job: queued requests are purged, the job ends cancelled with its
// counts and one row per custom_id it has.
func TestCancelMidJob(t *testing.T) {
	s := newStack(t)
	var lines []string
	for i := range 300 {
		lines = append(lines, fmt.Sprintf(`{"custom_id":"c%d","prompt":%q,"max_tokens":48}`, i, prompts[i%len(prompts)]))
	}
	sum := s.submit(t, jobs.KindCompletion, strings.Join(lines, "\n"))
	s.worker(t, 4)
	ctx := context.Background()
	pipelinetest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		j, err := s.store.Get(ctx, sum.Job.ID)
		if err == nil && j.RequestCounts.Completed < 4 {
			return fmt.Errorf("%d completed", j.RequestCounts.Completed)
		}
		return err
	})
	_, purged, err := jobs.Cancel(ctx, s.bus, s.store, sum.Job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if purged == 0 {
		t.Errorf("nothing purged")
	}
	j := s.wait(t, sum.Job.ID, jobs.StatusCancelled)
	if j.RequestCounts.Completed == 0 || j.RequestCounts.Done() >= 300 {
		t.Errorf("cancelled counts %+v", j.RequestCounts)
	}
	if out := outputs(t, j); len(out) != j.RequestCounts.Done() {
		t.Errorf("%d output rows, counts %+v", len(out), j.RequestCounts)
	}
	st, err := s.bus.JetStream().Stream(ctx, pipeline.StreamRequests)
	if err != nil {
		t.Fatal(err)
	}
	pipelinetest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		info, err := st.Info(ctx)
		if err == nil && info.State.Msgs != 0 {
			return fmt.Errorf("%d requests still queued", info.State.Msgs)
		}
		return err
	})
}
