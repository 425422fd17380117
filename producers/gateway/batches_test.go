package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/shared"

	"github.com/largeforge/largeforge/consumers/resultsink"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/producers/gateway"
	"github.com/largeforge/largeforge/producers/submit"
	"github.com/largeforge/largeforge/schemas"
	"github.com/largeforge/largeforge/storage"
)

// batchStack is the gateway stack of newStack (a real infer worker on
// stories260K) with the results sink, and "gpt-4o-mini" mapped to
// "stories".
func batchStack(t *testing.T) *stack {
	t.Helper()
	s := newStack(t, gateway.Config{Files: gateway.FilesConfig{ModelMap: map[string]string{"gpt-4o-mini": "stories"}}})
	ctx, cancel := context.WithCancel(context.Background())
	objs, err := storage.OpenObjects(ctx, s.bus, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	w, err := resultsink.StartStore(ctx, s.bus, objs, resultsink.Options{MaxWait: 50 * time.Millisecond, SweepEvery: 200 * time.Millisecond}, pipelinetest.Logger(t))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = w.Wait()
	})
	return s
}

// chatLine is one input line of a chat batch.
func chatLine(id, model, content string, maxTokens int) string {
	b, _ := json.Marshal(map[string]any{"custom_id": id, "method": "POST", "url": "/v1/chat/completions",
		"body": map[string]any{"model": model, "messages": []map[string]string{{"role": "user", "content": content}}, "max_tokens": maxTokens, "temperature": 0}})
	return string(b)
}

// tooLong is a prompt over stories260K's context: the worker fails it.
var tooLong = strings.Repeat("Once upon a time there was a cat. ", 200)

func (s *stack) upload(t *testing.T, ctx context.Context, lines []string, purpose openai.FilePurpose) *openai.FileObject {
	t.Helper()
	f, err := s.oai.Files.New(ctx, openai.FileNewParams{File: openai.File(strings.NewReader(strings.Join(lines, "\n")+"\n"), "in.jsonl", "application/jsonl"), Purpose: purpose})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// waitBatch polls a batch until it reaches status.
func (s *stack) waitBatch(t *testing.T, ctx context.Context, id string, status openai.BatchStatus) *openai.Batch {
	t.Helper()
	var b *openai.Batch
	pipelinetest.CheckFor(t, 60*time.Second, 50*time.Millisecond, func() error {
		var err error
		if b, err = s.oai.Batches.Get(ctx, id); err != nil {
			return err
		}
		if b.Status != status {
			return fmt.Errorf("batch %s is %s, want %s", id, b.Status, status)
		}
		return nil
	})
	return b
}

// contentLines downloads a file and decodes its lines.
func (s *stack) contentLines(t *testing.T, ctx context.Context, id string) []map[string]json.RawMessage {
	t.Helper()
	resp, err := s.oai.Files.Content(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out []map[string]json.RawMessage
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("file %s line %q: %v", id, sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

// TestBatchesOpenAISDK drives the Files and Batches APIs with openai-go
// over the real stack: upload, batch, poll to completed, output and error
// files line by line (a failed request only in the error file, chat
// bodies chatcmpl- without text), a batch whose every line fails (only an
// error file), a cancelled batch, and the file list and delete.
func TestBatchesOpenAISDK(t *testing.T) {
	s := batchStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()

	in := s.upload(t, ctx, []string{
		chatLine("a", "gpt-4o-mini", "Tell me a story", 12),
		chatLine("b", "gpt-4o-mini", tooLong, 4000),
		strings.Replace(chatLine("c", "gpt-4o-mini", "Once upon a time", 3), `"max_tokens"`, `"max_completion_tokens"`, 1),
	}, openai.FilePurposeBatch)
	if !strings.HasPrefix(in.ID, "file-") || in.Purpose != openai.FileObjectPurposeBatch || in.Filename != "in.jsonl" || in.Bytes == 0 || in.CreatedAt == 0 {
		t.Fatalf("file %+v", in)
	}
	b, err := s.oai.Batches.New(ctx, openai.BatchNewParams{InputFileID: in.ID, Endpoint: openai.BatchNewParamsEndpointV1ChatCompletions,
		CompletionWindow: openai.BatchNewParamsCompletionWindow24h, Metadata: shared.Metadata{"run": "nightly"}})
	if err != nil {
		t.Fatal(err)
	}
	if b.Status != openai.BatchStatusValidating || b.InputFileID != in.ID || b.Metadata["run"] != "nightly" || b.Endpoint != "/v1/chat/completions" {
		t.Fatalf("new batch %+v", b)
	}
	b = s.waitBatch(t, ctx, b.ID, openai.BatchStatusCompleted)
	if b.RequestCounts.Total != 3 || b.RequestCounts.Completed != 2 || b.RequestCounts.Failed != 1 || b.OutputFileID == "" || b.ErrorFileID == "" ||
		b.InProgressAt == 0 || b.FinalizingAt == 0 || b.CompletedAt == 0 || b.CompletionWindow != "24h" {
		t.Fatalf("completed batch %+v", b)
	}
	want := s.direct(t, schemas.CompletionRequest{Messages: []schemas.ChatMessage{{Role: "user", Content: "Tell me a story"}}, MaxTokens: 12, Temperature: 0})
	out := s.contentLines(t, ctx, b.OutputFileID)
	if len(out) != 2 {
		t.Fatalf("output file has %d lines, want the 2 successes", len(out))
	}
	for _, l := range out {
		var id string
		_ = json.Unmarshal(l["custom_id"], &id)
		var resp struct {
			StatusCode int             `json:"status_code"`
			RequestID  string          `json:"request_id"`
			Body       json.RawMessage `json:"body"`
		}
		if err := json.Unmarshal(l["response"], &resp); err != nil || resp.StatusCode != 200 || string(l["error"]) != "null" || len(l) != 4 {
			t.Fatalf("output line %s: %s", id, mustJSON(l))
		}
		var raw struct {
			Choices []map[string]json.RawMessage `json:"choices"`
		}
		_ = json.Unmarshal(resp.Body, &raw)
		var c openai.ChatCompletion
		if err := json.Unmarshal(resp.Body, &c); err != nil || !strings.HasPrefix(c.ID, "chatcmpl-") || c.Object != "chat.completion" || len(raw.Choices) != 1 {
			t.Fatalf("output line %s body %s", id, resp.Body)
		}
		if _, has := raw.Choices[0]["text"]; has {
			t.Errorf("output line %s: a chat choice carries text: %s", id, resp.Body)
		}
		if id == "a" && c.Choices[0].Message.Content != want.Text {
			t.Errorf("line a says %q, the model directly %q", c.Choices[0].Message.Content, want.Text)
		}
		if id == "c" && (c.Usage.CompletionTokens < 1 || c.Usage.CompletionTokens > 3) {
			t.Errorf("line c (max_completion_tokens 3) generated %d tokens", c.Usage.CompletionTokens)
		}
		if id == "b" {
			t.Errorf("the failed request b is in the output file")
		}
	}
	errs := s.contentLines(t, ctx, b.ErrorFileID)
	if len(errs) != 1 || string(errs[0]["custom_id"]) != `"b"` {
		t.Fatalf("error file %s, want the line of b alone", mustJSON(errs))
	}
	var eresp struct {
		StatusCode int `json:"status_code"`
		Body       struct {
			Error struct {
				Message string  `json:"message"`
				Type    string  `json:"type"`
				Param   *string `json:"param"`
			} `json:"error"`
		} `json:"body"`
	}
	if err := json.Unmarshal(errs[0]["response"], &eresp); err != nil || eresp.StatusCode != 400 || eresp.Body.Error.Message == "" || eresp.Body.Error.Type != "invalid_request_error" {
		t.Errorf("error line %s", mustJSON(errs[0]))
	}
	// The line's error names the field over the model's context (OpenAI's
	// param), as the interactive API does.
	if p := eresp.Body.Error.Param; p == nil || (*p != "prompt" && *p != "max_tokens") || !strings.HasPrefix(eresp.Body.Error.Message, "Invalid "+*p+": ") {
		t.Errorf("error line %s: want the param its message names", mustJSON(errs[0]))
	}
	of, err := s.oai.Files.Get(ctx, b.OutputFileID)
	if err != nil || of.Purpose != openai.FileObjectPurposeBatchOutput || of.Bytes == 0 {
		t.Errorf("output file %+v %v", of, err)
	}

	t.Run("every line fails: only an error file", func(t *testing.T) {
		f := s.upload(t, ctx, []string{chatLine("x", "stories", tooLong, 4000), chatLine("y", "stories", tooLong, 4000)}, openai.FilePurposeBatch)
		nb, err := s.oai.Batches.New(ctx, openai.BatchNewParams{InputFileID: f.ID, Endpoint: openai.BatchNewParamsEndpointV1ChatCompletions, CompletionWindow: openai.BatchNewParamsCompletionWindow24h})
		if err != nil {
			t.Fatal(err)
		}
		nb = s.waitBatch(t, ctx, nb.ID, openai.BatchStatusCompleted)
		if nb.OutputFileID != "" || nb.ErrorFileID == "" || nb.RequestCounts.Failed != 2 {
			t.Fatalf("batch %+v: want no output file, an error file and 2 failed", nb)
		}
		if lines := s.contentLines(t, ctx, nb.ErrorFileID); len(lines) != 2 {
			t.Errorf("error file: %d lines", len(lines))
		}
	})

	t.Run("cancel", func(t *testing.T) {
		lines := make([]string, 200)
		for i := range lines {
			lines[i] = chatLine(fmt.Sprintf("r%d", i), "stories", "Tell me a long story", 200)
		}
		f := s.upload(t, ctx, lines, openai.FilePurposeBatch)
		nb, err := s.oai.Batches.New(ctx, openai.BatchNewParams{InputFileID: f.ID, Endpoint: openai.BatchNewParamsEndpointV1ChatCompletions, CompletionWindow: openai.BatchNewParamsCompletionWindow24h})
		if err != nil {
			t.Fatal(err)
		}
		// Cancelled once its requests are queued (in_progress: all published).
		s.waitBatch(t, ctx, nb.ID, openai.BatchStatusInProgress)
		cb, err := s.oai.Batches.Cancel(ctx, nb.ID)
		if err != nil || cb.Status != openai.BatchStatusCancelling || cb.CancellingAt == 0 {
			t.Fatalf("cancel: %+v %v", cb, err)
		}
		cb = s.waitBatch(t, ctx, nb.ID, openai.BatchStatusCancelled)
		if cb.CancelledAt == 0 || cb.RequestCounts.Total != 200 || cb.RequestCounts.Completed >= 200 {
			t.Errorf("cancelled batch %+v", cb.RequestCounts)
		}
		// The workers skip what was queued (api cannot purge LF_REQUESTS):
		// the work queue ends up holding none of the batch's requests.
		st, err := s.bus.JetStream().Stream(ctx, pipeline.StreamRequests)
		if err != nil {
			t.Fatal(err)
		}
		pipelinetest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
			info, err := st.Info(ctx, jetstream.WithSubjectFilter("lf.req."+nb.ID+".>"))
			if err != nil || len(info.State.Subjects) != 0 {
				return fmt.Errorf("LF_REQUESTS holds requests of the cancelled batch: %v %v", info.State.Subjects, err)
			}
			return nil
		})
		// The counts are those of the files: every finished request once.
		cb = s.waitBatch(t, ctx, nb.ID, openai.BatchStatusCancelled)
		done := 0
		for _, id := range []string{cb.OutputFileID, cb.ErrorFileID} {
			if id != "" {
				done += len(s.contentLines(t, ctx, id))
			}
		}
		if c := cb.RequestCounts; done != int(c.Completed+c.Failed) || c.Completed >= 200 {
			t.Errorf("cancelled batch: counts %+v, %d lines in its files", c, done)
		}
		if _, err := s.oai.Batches.Cancel(ctx, nb.ID); err == nil || !strings.Contains(err.Error(), "400") {
			t.Errorf("cancelling a cancelled batch: %v, want a 400", err)
		}
	})

	t.Run("list and delete", func(t *testing.T) {
		page, err := s.oai.Batches.List(ctx, openai.BatchListParams{Limit: openai.Int(100)})
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, x := range page.Data {
			found = found || x.ID == b.ID
		}
		if !found {
			t.Errorf("batch %s not listed", b.ID)
		}
		one, err := s.oai.Batches.List(ctx, openai.BatchListParams{Limit: openai.Int(1)})
		if err != nil || len(one.Data) != 1 || !one.HasMore {
			t.Fatalf("limit 1: %+v %v", one, err)
		}
		next, err := s.oai.Batches.List(ctx, openai.BatchListParams{Limit: openai.Int(1), After: openai.String(one.Data[0].ID)})
		if err != nil || len(next.Data) != 1 || next.Data[0].ID == one.Data[0].ID {
			t.Fatalf("after: %+v %v", next, err)
		}
		fl, err := s.oai.Files.List(ctx, openai.FileListParams{Purpose: openai.String("batch_output")})
		if err != nil {
			t.Fatal(err)
		}
		ids := map[string]bool{}
		for _, f := range fl.Data {
			ids[f.ID] = true
		}
		if !ids[b.OutputFileID] || !ids[b.ErrorFileID] || ids[in.ID] {
			t.Errorf("batch_output files %v", ids)
		}
		if d, err := s.oai.Files.Delete(ctx, in.ID); err != nil || !d.Deleted {
			t.Fatalf("delete: %+v %v", d, err)
		}
		if _, err := s.oai.Files.Get(ctx, in.ID); err == nil || !strings.Contains(err.Error(), "404") {
			t.Errorf("deleted file: %v, want 404", err)
		}
	})
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// rawUpload posts a multipart upload and returns the status and body.
func (s *stack) rawUpload(t *testing.T, ctx context.Context, content, purpose string) (int, string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	fw, _ := mw.CreateFormFile("file", "x.jsonl")
	_, _ = io.WriteString(fw, content)
	if purpose != "" {
		_ = mw.WriteField("purpose", purpose)
	}
	_ = mw.Close()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.url+"/v1/files", &buf)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	return s.do(t, req)
}

func (s *stack) do(t *testing.T, req *http.Request) (int, string) {
	t.Helper()
	resp, err := s.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestBatchesBadInput: bad uploads and batch parameters get OpenAI's error
// objects and create nothing; a file whose lines break the rules makes a
// batch that fails with its errors and puts nothing on the bus.
func TestBatchesBadInput(t *testing.T) {
	s := batchStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	good := s.upload(t, ctx, []string{chatLine("a", "stories", "hi", 4)}, openai.FilePurposeBatch)
	tune := s.upload(t, ctx, []string{`{"messages":[{"role":"user","content":"hi"}]}`}, openai.FilePurposeFineTune)

	for _, tc := range []struct{ name, content, purpose, param string }{
		{"not JSONL", "a,b,c\n1,2,3\n", "batch", "file"},
		{"unknown purpose", `{"a":1}` + "\n", "assistants", "purpose"},
		{"no purpose", `{"a":1}` + "\n", "", "purpose"},
	} {
		t.Run("upload "+tc.name, func(t *testing.T) {
			code, body := s.rawUpload(t, ctx, tc.content, tc.purpose)
			var e struct {
				Error struct {
					Message string  `json:"message"`
					Type    string  `json:"type"`
					Param   *string `json:"param"`
				} `json:"error"`
			}
			if code != 400 || json.Unmarshal([]byte(body), &e) != nil || e.Error.Type != "invalid_request_error" || e.Error.Param == nil || *e.Error.Param != tc.param {
				t.Errorf("%d %s, want a 400 naming %s", code, body, tc.param)
			}
		})
	}
	files, err := s.oai.Files.List(ctx, openai.FileListParams{})
	if err != nil || len(files.Data) != 2 {
		t.Fatalf("files after refused uploads: %+v %v, want the 2 good ones", files, err)
	}

	post := func(body string) (int, string) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.url+"/v1/batches", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		return s.do(t, req)
	}
	for _, tc := range []struct {
		name, body string
		code       int
		param      string
	}{
		{"unknown endpoint", `{"input_file_id":"` + good.ID + `","endpoint":"/v1/embeddings","completion_window":"24h"}`, 400, "endpoint"},
		{"unknown window", `{"input_file_id":"` + good.ID + `","endpoint":"/v1/chat/completions","completion_window":"48h"}`, 400, "completion_window"},
		{"missing file", `{"input_file_id":"file-nope","endpoint":"/v1/chat/completions","completion_window":"24h"}`, 404, "input_file_id"},
		{"fine-tune file", `{"input_file_id":"` + tune.ID + `","endpoint":"/v1/chat/completions","completion_window":"24h"}`, 400, "input_file_id"},
		{"unknown field", `{"input_file_id":"` + good.ID + `","endpoint":"/v1/chat/completions","completion_window":"24h","priority":1}`, 400, "priority"},
	} {
		t.Run("batch "+tc.name, func(t *testing.T) {
			code, body := post(tc.body)
			var e struct {
				Error struct {
					Param *string `json:"param"`
				} `json:"error"`
			}
			if code != tc.code || json.Unmarshal([]byte(body), &e) != nil || e.Error.Param == nil || *e.Error.Param != tc.param {
				t.Errorf("%d %s, want %d naming %s", code, body, tc.code, tc.param)
			}
		})
	}
	if page, err := s.oai.Batches.List(ctx, openai.BatchListParams{}); err != nil || len(page.Data) != 0 {
		t.Fatalf("batches after refused creates: %+v %v", page, err)
	}

	for _, tc := range []struct {
		name  string
		lines []string
		code  string
	}{
		{"wrong url", []string{strings.Replace(chatLine("a", "stories", "hi", 4), "/v1/chat/completions", "/v1/embeddings", 1)}, "invalid_url"},
		{"other endpoint", []string{strings.Replace(chatLine("a", "stories", "hi", 4), "/v1/chat/completions", "/v1/completions", 1)}, "mismatched_endpoint"},
		{"wrong method", []string{strings.Replace(chatLine("a", "stories", "hi", 4), `"POST"`, `"GET"`, 1)}, "invalid_method"},
		{"duplicate custom_id", []string{chatLine("a", "stories", "hi", 4), chatLine("a", "stories", "ho", 4)}, "duplicate_custom_id"},
		{"unknown model", []string{chatLine("a", "gpt-5", "hi", 4)}, "model_not_found"},
		{"unsupported parameter", []string{strings.Replace(chatLine("a", "stories", "hi", 4), `"max_tokens"`, `"tools":[{"type":"function"}],"max_tokens"`, 1)}, "unsupported_parameter"},
		{"n over 1", []string{strings.Replace(chatLine("a", "stories", "hi", 4), `"max_tokens"`, `"n":2,"max_tokens"`, 1)}, "unsupported_parameter"},
		{"bad body", []string{strings.Replace(chatLine("a", "stories", "hi", 4), `"temperature":0`, `"temperature":9`, 1)}, "invalid_request"},
	} {
		t.Run("file "+tc.name, func(t *testing.T) {
			f := s.upload(t, ctx, tc.lines, openai.FilePurposeBatch)
			b, err := s.oai.Batches.New(ctx, openai.BatchNewParams{InputFileID: f.ID, Endpoint: openai.BatchNewParamsEndpointV1ChatCompletions, CompletionWindow: openai.BatchNewParamsCompletionWindow24h})
			if err != nil {
				t.Fatal(err)
			}
			if b.Status != openai.BatchStatusFailed || len(b.Errors.Data) == 0 || b.Errors.Data[0].Code != tc.code || b.FailedAt == 0 || b.OutputFileID != "" {
				t.Fatalf("batch %s, want failed with %s", mustJSON(b), tc.code)
			}
			st, err := s.bus.JetStream().Stream(ctx, pipeline.StreamRequests)
			if err != nil {
				t.Fatal(err)
			}
			info, err := st.Info(ctx, jetstream.WithSubjectFilter("lf.req."+b.ID+".>"))
			if err != nil || len(info.State.Subjects) != 0 {
				t.Errorf("LF_REQUESTS holds requests of the failed batch: %v %v", info.State.Subjects, err)
			}
		})
	}
}

// runBatchAsAPI uploads a file, creates a batch (its custom_ids and
// requests go out with the gateway's credential) until it is in_progress,
// and deletes the file (a purge of its chunks), over the gateway of s
// connected as gw.
func runBatchAsAPI(t *testing.T, ctx context.Context, s *stack, gw *pipeline.Bus) {
	code, body := s.rawUpload(t, ctx, chatLine("a", "stories", "Tell me a story", 4)+"\n", "batch")
	var f gateway.FileObject
	if code != 200 || json.Unmarshal([]byte(body), &f) != nil {
		t.Fatalf("upload %d %s", code, body)
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.url+"/v1/batches",
		strings.NewReader(`{"input_file_id":"`+f.ID+`","endpoint":"/v1/chat/completions","completion_window":"24h"}`))
	code, body = s.do(t, req)
	var b gateway.Batch
	if code != 200 || json.Unmarshal([]byte(body), &b) != nil {
		t.Fatalf("create batch %d %s", code, body)
	}
	pipelinetest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.url+"/v1/batches/"+b.ID, nil)
		code, body := s.do(t, req)
		if code != 200 || json.Unmarshal([]byte(body), &b) != nil || b.Status == "validating" {
			return fmt.Errorf("batch %d %s", code, body)
		}
		return nil
	})
	if b.Status != "in_progress" && b.Status != "finalizing" {
		t.Fatalf("batch %+v, want in_progress", b)
	}
	req, _ = http.NewRequestWithContext(ctx, http.MethodDelete, s.url+"/v1/files/"+f.ID, nil)
	if code, body := s.do(t, req); code != 200 {
		t.Fatalf("delete %d %s", code, body)
	}
	if err := gw.Conn().LastError(); err != nil {
		t.Errorf("the api role's batch work raised %v", err)
	}
}

// TestCLIJobAsBatch: a job submitted as `largeforge submit` does is a batch
// over HTTP, and its results are files in OpenAI's format (completions:
// cmpl- ids, text_completion, no message in a choice).
func TestCLIJobAsBatch(t *testing.T) {
	s := batchStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	path := filepath.Join(t.TempDir(), "in.jsonl")
	if err := os.WriteFile(path, []byte(`{"custom_id":"p1","prompt":"Once upon a time","max_tokens":6,"temperature":0}`+"\n"+
		`{"custom_id":"p2","prompt":"The cat","max_tokens":6,"temperature":0}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sub, err := submit.New(ctx, s.bus, submit.Config{Model: "stories"}, pipelinetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	sum, err := sub.Submit(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	b := s.waitBatch(t, ctx, sum.Job.ID, openai.BatchStatusCompleted)
	if b.RequestCounts.Completed != 2 || b.OutputFileID == "" || b.ErrorFileID != "" {
		t.Fatalf("CLI job as a batch: %+v", b)
	}
	lines := s.contentLines(t, ctx, b.OutputFileID)
	if len(lines) != 2 {
		t.Fatalf("output file: %d lines", len(lines))
	}
	for _, l := range lines {
		var resp struct {
			Body struct {
				ID      string                       `json:"id"`
				Object  string                       `json:"object"`
				Choices []map[string]json.RawMessage `json:"choices"`
			} `json:"body"`
		}
		if err := json.Unmarshal(l["response"], &resp); err != nil || !strings.HasPrefix(resp.Body.ID, "cmpl-") || resp.Body.Object != "text_completion" || len(resp.Body.Choices) != 1 {
			t.Fatalf("line %s", mustJSON(l))
		}
		if _, has := resp.Body.Choices[0]["message"]; has {
			t.Errorf("a completion choice carries a message: %s", mustJSON(l))
		}
	}
}

// TestFileUploadLimit: an upload over --max-file-bytes is a 413 that leaves
// nothing in lf_artifacts; one over the JSON body limit but under the file
// limit is stored whole and reads back byte for byte.
func TestFileUploadLimit(t *testing.T) {
	_, bus := pipelinetest.StartBus(t)
	ctx, cancel := context.WithCancel(context.Background())
	g, err := gateway.New(ctx, bus, gateway.Config{Files: gateway.FilesConfig{MaxFileBytes: 3 << 20}}, pipelinetest.Logger(t), nil, nil)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	s := &stack{bus: bus, url: "http://" + serveGateway(t, ctx, cancel, g, nil), http: &http.Client{Timeout: 30 * time.Second}}
	line := chatLine("x", "stories", strings.Repeat("a", 1000), 4) + "\n"
	big := strings.Repeat(line, (4<<20)/len(line))
	if code, body := s.rawUpload(t, ctx, big, "batch"); code != http.StatusRequestEntityTooLarge || !strings.Contains(body, `"param":"file"`) {
		t.Fatalf("upload over the limit: %d %s", code, body)
	}
	obj, err := bus.Objects(ctx, pipeline.BucketArtifacts)
	if err != nil {
		t.Fatal(err)
	}
	if infos, err := obj.List(ctx); err != nil || len(infos) != 0 {
		t.Fatalf("lf_artifacts after a refused upload: %+v %v", infos, err)
	}
	ok := big[:2<<20]
	ok = ok[:strings.LastIndex(ok, "\n")+1]
	code, body := s.rawUpload(t, ctx, ok, "fine-tune")
	var f gateway.FileObject
	if code != 200 || json.Unmarshal([]byte(body), &f) != nil || f.Bytes != int64(len(ok)) || f.Purpose != "fine-tune" {
		t.Fatalf("upload of %d bytes: %d %s", len(ok), code, body)
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.url+"/v1/files/"+f.ID+"/content", nil)
	if code, got := s.do(t, req); code != 200 || got != ok {
		t.Fatalf("content: %d, %d bytes, want the %d uploaded", code, len(got), len(ok))
	}
}
