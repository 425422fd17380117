package gateway_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/producers/gateway"
	"github.com/largeforge/largeforge/producers/submit"
	"github.com/largeforge/largeforge/storage"
)

// TestFilesListRendersItsPageOnly: GET /v1/files lists the result files of
// finished jobs without rendering them all; only those on the page asked
// for are rendered (stored), with the object that a full listing and GET
// /v1/files/{id} give later, its bytes the content's length.
func TestFilesListRendersItsPageOnly(t *testing.T) {
	s := batchStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sub, err := submit.New(ctx, s.bus, submit.Config{Model: "stories"}, pipelinetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	for i, prompt := range []string{"Once upon a time", "The cat"} {
		path := filepath.Join(t.TempDir(), "in.jsonl")
		if err := os.WriteFile(path, []byte(`{"custom_id":"p","prompt":"`+prompt+`","max_tokens":4,"temperature":0}`+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		sum, err := sub.Submit(ctx, path, nil)
		if err != nil {
			t.Fatalf("job %d: %v", i, err)
		}
		s.waitBatch(t, ctx, sum.Job.ID, openai.BatchStatusCompleted)
	}
	list := func(query string) []gateway.FileObject {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.url+"/v1/files"+query, nil)
		code, body := s.do(t, req)
		var p struct{ Data []gateway.FileObject }
		if code != http.StatusOK || json.Unmarshal([]byte(body), &p) != nil {
			t.Fatalf("GET /v1/files%s: %d %s", query, code, body)
		}
		return p.Data
	}
	obj, err := s.bus.Objects(ctx, pipeline.BucketArtifacts)
	if err != nil {
		t.Fatal(err)
	}
	rendered := func() int {
		infos, err := obj.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, in := range infos {
			if id, ok := storage.FileIDOfMeta(in.Name); ok && strings.HasPrefix(id, "file-out-") {
				n++
			}
		}
		return n
	}
	first := list("?limit=1")
	if len(first) != 1 || first[0].Bytes == 0 {
		t.Fatalf("a page of one: %+v", first)
	}
	if n := rendered(); n != 1 {
		t.Fatalf("%d result files rendered by a listing of one, want 1", n)
	}
	all := list("")
	if len(all) != 2 || rendered() != 2 {
		t.Fatalf("all files: %+v, %d rendered", all, rendered())
	}
	get := func(path string) string {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.url+path, nil)
		code, body := s.do(t, req)
		if code != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, code, body)
		}
		return body
	}
	for _, fo := range all {
		var got gateway.FileObject
		if err := json.Unmarshal([]byte(get("/v1/files/"+fo.ID)), &got); err != nil || got != fo {
			t.Errorf("listed %+v, GET gives %+v (%v)", fo, got, err)
		}
		if n := len(get("/v1/files/" + fo.ID + "/content")); int64(n) != fo.Bytes {
			t.Errorf("%s: %d bytes listed, content %d", fo.ID, fo.Bytes, n)
		}
	}
	if all[0] != first[0] {
		t.Errorf("the page of one gave %+v, the full listing %+v", first[0], all[0])
	}
}
