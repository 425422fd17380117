package resultsink_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/largeforge/largeforge/consumers/resultsink"
	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/producers/submit"
	"github.com/largeforge/largeforge/schemas"
	"github.com/largeforge/largeforge/storage"
)

// The attack: while a real job runs (submitted by the submitter,
// answered by a worker), a publisher with the infer role's credential forges
// results on lf.res.<job>, for custom_ids the job never submitted and for
// custom_ids already answered. The job completes with exactly its real
// results, its counts equal to its total, and every forged result is on the
// dead-letter stream with its reason and original bytes.
func TestSinkRefusesForgedResults(t *testing.T) {
	const rows = 3000 // three chunks of custom_ids
	ctx := context.Background()
	srv, admin := pipelinetest.StartRoles(t, nil)
	forger := pipelinetest.ConnectRole(t, srv, "infer", pipelinetest.Logger(t))
	store, err := jobs.Open(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{bus: admin, store: store, dir: filepath.Join(t.TempDir(), "jobs")}
	e.start(t)

	// The worker answers each request once.
	wctx, stopWorker := context.WithCancel(ctx)
	defer stopWorker()
	worker, err := pipeline.NewConsumer(wctx, admin, pipeline.ConsumerConfig{Stream: pipeline.StreamRequests, Durable: "fake-infer",
		FilterSubjects: []string{"lf.req.>"}, Stage: "infer", Batch: 64, MaxWait: 100 * time.Millisecond},
		pipeline.PerMessage(func(ctx context.Context, m pipeline.Msg) error {
			req, err := schemas.DecodeRequest(m.Data)
			if err != nil {
				return pipeline.Invalid("not a request", err)
			}
			data, _ := json.Marshal(ok(t, req.Job, req.CustomID, "real "+req.CustomID))
			subj, _ := pipeline.ResultSubject(req.Job)
			_, err = admin.Publish(ctx, subj, data, schemas.MsgID(req.Job, req.CustomID), nil)
			return err
		}), pipelinetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = worker.Run(wctx) }()

	var in strings.Builder
	for i := range rows {
		fmt.Fprintf(&in, `{"custom_id":"row-%d","prompt":"p","max_tokens":4}`+"\n", i)
	}
	path := filepath.Join(t.TempDir(), "in.jsonl")
	if err := os.WriteFile(path, []byte(in.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	sub, err := submit.New(ctx, admin, submit.Config{Model: "m", JobID: "attacked", Window: 64}, pipelinetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}

	forge := func(id, text string, n int) []byte {
		data, _ := json.Marshal(ok(t, "attacked", id, text))
		if _, err := forger.Publish(ctx, "lf.res.attacked", data, fmt.Sprintf("forged-%d", n), nil); err != nil {
			t.Errorf("forged publish: %v", err)
		}
		return data
	}
	forged := map[string]string{} // original bytes → the reason expected
	// Unknown custom_ids, while the submission is still under way.
	submitted := make(chan error, 1)
	go func() {
		_, err := sub.Submit(ctx, path, nil)
		submitted <- err
	}()
	// Before the job record exists a result is "unknown job"; the forging
	// starts once it does, so each ghost meets the custom_id check.
	pipelinetest.CheckFor(t, 30*time.Second, 5*time.Millisecond, func() error {
		_, err := store.Get(ctx, "attacked")
		return err
	})
	for i := range 200 {
		forged[string(forge(fmt.Sprintf("ghost-%d", i), "forged", i))] = "unknown custom_id"
	}
	if err := <-submitted; err != nil {
		t.Fatal(err)
	}
	// Answered custom_ids: those the sink has stored.
	files, err := storage.NewLocal(storage.Dirs{Jobs: e.dir})
	if err != nil {
		t.Fatal(err)
	}
	parts, err := storage.JobParts(files, "attacked")
	if err != nil {
		t.Fatal(err)
	}
	var answered []string
	pipelinetest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		answered = answered[:0]
		list, err := parts.List(ctx)
		if err != nil {
			return err
		}
		for _, p := range list {
			ids, err := customIDs(files, p.Key)
			if err != nil {
				return err
			}
			answered = append(answered, ids...)
		}
		if len(answered) < 100 {
			return fmt.Errorf("%d answered", len(answered))
		}
		return nil
	})
	for i, id := range answered[:100] {
		forged[string(forge(id, "forged", 1000+i))] = "duplicate result"
	}

	done := e.waitStatus(t, "attacked", jobs.StatusCompleted)
	if done.RequestCounts != (jobs.Counts{Total: rows, Completed: rows}) {
		t.Errorf("counts %+v, want %d of %d completed", done.RequestCounts, rows, rows)
	}
	out, err := resultsink.ReadOutput(filepath.Join(done.Outputs.LocalDir, resultsink.FileOutput))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, l := range out {
		var body schemas.CompletionResponse
		if err := json.Unmarshal(l.Response.Body, &body); err != nil || body.Choices[0].Text != "real "+l.CustomID || seen[l.CustomID] {
			t.Errorf("output line %s: %+v %v (twice: %v)", l.CustomID, body, err, seen[l.CustomID])
		}
		seen[l.CustomID] = true
	}
	if len(out) != rows {
		t.Errorf("output.jsonl holds %d lines, want %d", len(out), rows)
	}
	// Every forged result is dead-lettered, and nothing else.
	pipelinetest.CheckFor(t, 15*time.Second, 50*time.Millisecond, func() error {
		recs := pipelinetest.DLQRecords(t, admin, "lf.dlq.results.attacked")
		if len(recs) != len(forged) {
			return fmt.Errorf("%d dead letters, want %d", len(recs), len(forged))
		}
		for _, r := range recs {
			if want, ok := forged[string(r.Data)]; !ok || r.Reason != want || r.Subject != "lf.res.attacked" {
				t.Fatalf("dead letter %s %q of %.80s: not a forged result or the wrong reason (%q)", r.Subject, r.Reason, r.Data, want)
			}
		}
		return nil
	})
}

// A result on a subject that is not lf.res.<its job> (lf.res.<job>.x,
// lf.res.*, another job's subject) is dead-lettered with its bytes, never
// stored for any job.
func TestSinkDeadLettersStraySubjects(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	e.create(t, jobs.Spec{ID: "real", Model: "m"}, "a")
	e.start(t)
	data, _ := json.Marshal(ok(t, "real", "a", "stray"))
	strays := []string{"lf.res.real.x", "lf.res.*", "lf.res.other"}
	for i, subj := range strays {
		if _, err := e.bus.Publish(ctx, subj, data, fmt.Sprintf("s%d", i), nil); err != nil {
			t.Fatalf("publish %s: %v", subj, err)
		}
	}
	pipelinetest.CheckFor(t, 15*time.Second, 50*time.Millisecond, func() error {
		recs := pipelinetest.DLQRecords(t, e.bus, "lf.dlq.results.>")
		if len(recs) != len(strays) {
			return fmt.Errorf("%d dead letters, want %d", len(recs), len(strays))
		}
		for i, r := range recs {
			if r.Subject != strays[i] || r.Reason != "stray subject" || string(r.Data) != string(data) {
				t.Fatalf("dead letter %d: %s %q", i, r.Subject, r.Reason)
			}
		}
		return nil
	})
	if _, err := os.Stat(filepath.Join(e.dir, "real")); !os.IsNotExist(err) {
		t.Errorf("a stray result was stored for job real: %v", err)
	}
}
