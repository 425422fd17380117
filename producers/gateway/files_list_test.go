package gateway_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/openai/openai-go/v3"
	"github.com/prometheus/client_golang/prometheus"

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

// TestFilesListedFromIndex: GET /v1/files lists the files from lf_files,
// without reading the objects of lf_artifacts (no consumer is created on
// OBJ_lf_artifacts for it); a file stored by a gateway older than lf_files
// (a meta.json and no entry) is listed once the first listing has added the
// entries missing, a deleted file is not, and another gateway, which finds
// the index complete, lists the same files without reading lf_artifacts
// either.
func TestFilesListedFromIndex(t *testing.T) {
	s := newStack(t, gateway.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a := s.upload(t, ctx, []string{`{"custom_id":"a"}`}, openai.FilePurposeBatch)
	b := s.upload(t, ctx, []string{`{"custom_id":"b"}`}, openai.FilePurposeBatch)
	// A file of an older gateway: its meta.json only.
	obj, err := s.bus.Objects(ctx, pipeline.BucketArtifacts)
	if err != nil {
		t.Fatal(err)
	}
	old := gateway.FileObject{ID: "file-old", Object: "file", Bytes: 3, CreatedAt: 1, Filename: "old.jsonl", Purpose: "batch", Status: "processed"}
	data, _ := json.Marshal(old)
	if _, err := obj.Put(ctx, storage.FileMeta(old.ID), strings.NewReader(string(data))); err != nil {
		t.Fatal(err)
	}
	// Consumers created on lf_artifacts' stream: a listing of its objects.
	var scans atomic.Int32
	for _, subj := range []string{"$JS.API.CONSUMER.CREATE.OBJ_lf_artifacts", "$JS.API.CONSUMER.CREATE.OBJ_lf_artifacts.>"} {
		sub, err := s.bus.Conn().Subscribe(subj, func(*nats.Msg) { scans.Add(1) })
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
	}
	if err := s.bus.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	list := func(url string) []string {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/v1/files", nil)
		code, body := s.do(t, req)
		var p struct{ Data []gateway.FileObject }
		if code != http.StatusOK || json.Unmarshal([]byte(body), &p) != nil {
			t.Fatalf("GET /v1/files: %d %s", code, body)
		}
		var ids []string
		for _, fo := range p.Data {
			ids = append(ids, fo.ID)
		}
		slices.Sort(ids) // two uploads within a second are ordered by id
		return ids
	}
	sorted := func(ids ...string) []string { slices.Sort(ids); return ids }
	if got, want := list(s.url), sorted(old.ID, a.ID, b.ID); !slices.Equal(got, want) {
		t.Fatalf("first listing %v, want %v", got, want)
	}
	if scans.Load() == 0 {
		t.Fatal("the first listing did not read lf_artifacts for the files stored before lf_files")
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodDelete, s.url+"/v1/files/"+a.ID, nil)
	if code, body := s.do(t, req); code != http.StatusOK {
		t.Fatalf("DELETE %s: %d %s", a.ID, code, body)
	}
	scans.Store(0)
	if got, want := list(s.url), sorted(old.ID, b.ID); !slices.Equal(got, want) {
		t.Fatalf("after a delete %v, want %v", got, want)
	}
	// Another gateway on the same bus.
	gctx, gcancel := context.WithCancel(context.Background())
	g, err := gateway.New(gctx, s.bus, gateway.Config{}, pipelinetest.Logger(t), prometheus.NewRegistry(), prometheus.NewRegistry())
	if err != nil {
		gcancel()
		t.Fatal(err)
	}
	other := "http://" + serveGateway(t, gctx, gcancel, g, nil)
	if got, want := list(other), sorted(old.ID, b.ID); !slices.Equal(got, want) {
		t.Fatalf("another gateway lists %v, want %v", got, want)
	}
	if err := s.bus.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	if n := scans.Load(); n != 0 {
		t.Fatalf("%d consumers created on OBJ_lf_artifacts by listings of a complete index, want 0", n)
	}
}
