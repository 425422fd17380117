package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/largeforge/largeforge/consumers/resultsink"
	"github.com/largeforge/largeforge/internal/testenv"
	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/producers/gateway"
	"github.com/largeforge/largeforge/schemas"
)

// A failed request of a completed job replayed with dlq replay: the job is
// reopened by compare-and-set, the request runs again on the model's infer
// worker, and the results sink lets its row replace the error row and
// nothing else: counts 2 completed, 0 failed, errors.jsonl empty, both
// custom_ids once in output.jsonl, the job completed again. Through the
// gateway, the batch then names new output and error file ids (none for
// errors: none failed) that serve the new rows, while the files rendered
// before the replay keep their ids and content.
func TestDLQReplayFailedRequest(t *testing.T) {
	dir := filepath.Dir(testenv.SharedFile(t, "models/stories260K/model.safetensors"))
	e, bus := pipelinetest.StartBus(t)
	ctx, cancel := context.WithCancel(context.Background())
	jw, err := startJobWorkers(ctx, bus, t.TempDir(), map[string]string{"stories": dir}, pipelinetest.Logger(t), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		if err := jw.Wait(); err != nil {
			t.Errorf("job workers: %v", err)
		}
	})
	tctx, tcancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer tcancel()
	store, err := jobs.Open(tctx, bus)
	if err != nil {
		t.Fatal(err)
	}
	j, err := store.Create(tctx, jobs.Spec{Model: "stories"})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.PutIDs(tctx, j.ID, 0, []string{"a", "b", "c"}); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Transition(tctx, j.ID, jobs.StatusInProgress, func(jj *jobs.Job) { jj.RequestCounts.Total = 3 }); err != nil {
		t.Fatal(err)
	}
	request := func(id string, line int) []byte {
		c := schemas.DefaultCompletionRequest()
		c.Model, c.Prompt, c.MaxTokens, c.Temperature = "stories", "Once upon a time", 8, 0
		data, err := json.Marshal(schemas.Request{Job: j.ID, CustomID: id, Kind: schemas.KindCompletion, Model: "stories", Line: line, Completion: &c})
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	subj := fmt.Sprintf("lf.req.%s.stories", j.ID)
	if _, err := bus.Publish(tctx, subj, request("a", 1), schemas.MsgID(j.ID, "a"), nil); err != nil {
		t.Fatal(err)
	}
	// b was dead-lettered by its worker (as after its last delivery).
	if err := bus.PublishDLQ(tctx, "infer", j.ID, pipeline.DLQRecord{Reason: "worker died", Subject: subj, Data: request("b", 2), Deliveries: 5}, ""); err != nil {
		t.Fatal(err)
	}
	// So was c, a score row (no RPC runs scores: its replay is queued).
	score, err := json.Marshal(schemas.Request{Job: j.ID, CustomID: "c", Kind: schemas.KindScore, Model: "stories", Line: 3,
		Score: &schemas.ScoreInput{Text: "Once upon a time there was a cat"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := bus.PublishDLQ(tctx, "infer", j.ID, pipeline.DLQRecord{Reason: "worker died", Subject: subj, Data: score, Deliveries: 5}, ""); err != nil {
		t.Fatal(err)
	}
	waitJob := func(completed, failed int) jobs.Job {
		t.Helper()
		var got jobs.Job
		pipelinetest.CheckFor(t, 60*time.Second, 50*time.Millisecond, func() error {
			if got, err = store.Get(tctx, j.ID); err != nil {
				return err
			}
			if got.Status != jobs.StatusCompleted || got.RequestCounts.Completed != completed || got.RequestCounts.Failed != failed {
				return fmt.Errorf("job %s %+v", got.Status, got.RequestCounts)
			}
			return nil
		})
		return got
	}
	first := waitJob(1, 2)
	errLines, err := resultsink.ReadOutput(filepath.Join(first.Outputs.LocalDir, resultsink.FileErrors))
	if err != nil || len(errLines) != 2 {
		t.Fatalf("errors.jsonl before the replay: %+v, %v", errLines, err)
	}
	reg := prometheus.NewRegistry()
	g, err := gateway.New(tctx, bus, gateway.Config{}, pipelinetest.Logger(t), reg, reg)
	if err != nil {
		t.Fatal(err)
	}
	url := serveGateway(t, tctx, g)
	oldOut, oldErr := batchFiles(t, url, j.ID)
	if oldOut == "" || oldErr == "" {
		t.Fatalf("batch before the replay: output file %q, error file %q", oldOut, oldErr)
	}
	wantFile(t, url, oldOut, "a")
	wantFile(t, url, oldErr, "b", "c")
	// One replay at a time: the second waits until the job completed again.
	for _, seq := range []string{"1", "2"} {
		pipelinetest.CheckFor(t, 60*time.Second, 50*time.Millisecond, func() error {
			out, err := runCLI(t, tctx, "dlq", "replay", seq, "--nats", e.ClientURL())
			if err != nil || !strings.Contains(out, seq+" replayed (lf.dlq.infer."+j.ID+")") {
				return fmt.Errorf("replay %s: %v\n%s", seq, err, out)
			}
			return nil
		})
	}
	again := waitJob(3, 0)
	if replaced := slices.Sorted(slices.Values(again.Replaced)); !slices.Equal(replaced, []string{"b", "c"}) || len(again.Replaying) != 0 {
		t.Fatalf("replayed job %+v", again)
	}
	errLines, err = resultsink.ReadOutput(filepath.Join(again.Outputs.LocalDir, resultsink.FileErrors))
	if err != nil || len(errLines) != 0 {
		t.Fatalf("errors.jsonl after the replay: %+v, %v", errLines, err)
	}
	lines, err := resultsink.ReadOutput(filepath.Join(again.Outputs.LocalDir, resultsink.FileOutput))
	if err != nil || len(lines) != 3 {
		t.Fatalf("output.jsonl after the replay: %+v, %v", lines, err)
	}
	for _, l := range lines {
		var sc schemas.ScoreOutput
		if l.Error != nil || l.Response == nil {
			t.Fatalf("output.jsonl after the replay: %+v", lines)
		}
		if isScore := json.Unmarshal(l.Response.Body, &sc) == nil && sc.Tokens > 0; isScore != (l.CustomID == "c") {
			t.Fatalf("output.jsonl after the replay: %s is a score: %t (%s)", l.CustomID, isScore, l.Response.Body)
		}
	}
	if left := pipelinetest.DLQRecords(t, bus, "lf.dlq.infer.>"); len(left) != 0 {
		t.Fatalf("dead letters left: %+v", left)
	}
	newOut, newErr := batchFiles(t, url, j.ID)
	if newOut == "" || newOut == oldOut || newErr != "" {
		t.Fatalf("batch after the replay: output file %q (before %q), error file %q, want a new output file and none for errors", newOut, oldOut, newErr)
	}
	wantFile(t, url, newOut, "a", "b", "c")
	wantFile(t, url, oldOut, "a")
	wantFile(t, url, oldErr, "b", "c")
}

// batchFiles is job id's output and error file ids as the gateway's batch
// object names them ("" for none).
func batchFiles(t *testing.T, url, id string) (output, errs string) {
	t.Helper()
	var b gateway.Batch
	if status := getJSON(t, url+"/v1/batches/"+id, &b); status != http.StatusOK {
		t.Fatalf("GET /v1/batches/%s: %d", id, status)
	}
	if b.OutputFileID != nil {
		output = *b.OutputFileID
	}
	if b.ErrorFileID != nil {
		errs = *b.ErrorFileID
	}
	return output, errs
}

// wantFile fails the test unless the gateway serves file id's content with
// one line for each of customIDs, in any order.
func wantFile(t *testing.T, url, id string, customIDs ...string) {
	t.Helper()
	resp, err := http.Get(url + "/v1/files/" + id + "/content")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("file %s: %d %s %v", id, resp.StatusCode, raw, err)
	}
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		var l struct {
			CustomID string `json:"custom_id"`
		}
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("file %s: line %q: %v", id, line, err)
		}
		got = append(got, l.CustomID)
	}
	slices.Sort(got)
	if !slices.Equal(got, customIDs) {
		t.Fatalf("file %s holds %v, want %v", id, got, customIDs)
	}
}
