package main

import (
	"bytes"
	"context"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/producers/gateway"
)

// TestSubmitFileID: a file uploaded over HTTP (POST /v1/files, the api
// credential) is a job's input for `largeforge submit --file-id` (the
// submit credential), read from lf_artifacts: the job names the file as its
// input and recorded every custom_id of it. A file of another purpose, a
// deleted one, and FILE with --file-id are refused.
func TestSubmitFileID(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e, admin := pipelinetest.StartRoles(t, nil)
	log := pipelinetest.Logger(t)
	reg := prometheus.NewRegistry()
	g, err := gateway.New(ctx, pipelinetest.ConnectRole(t, e, "api", log), gateway.Config{}, log, reg, reg)
	if err != nil {
		t.Fatal(err)
	}
	url := serveGateway(t, ctx, g)
	upload := func(purpose, content string) string { return uploadFile(t, url, purpose, content) }
	ids := []string{"a", "b", "c"}
	var lines []string
	for _, id := range ids {
		lines = append(lines, `{"custom_id":"`+id+`","method":"POST","url":"/v1/completions","body":{"prompt":"Once","max_tokens":2}}`)
	}
	file := upload("batch", strings.Join(lines, "\n")+"\n")

	out, err := runCLIAs(t, ctx, e, "submit", "submit", "--file-id", file, "--model", "stories")
	if err != nil {
		t.Fatalf("submit --file-id: %v\n%s", err, out)
	}
	store, err := jobs.Open(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	j, err := store.Get(ctx, strings.TrimSpace(out))
	if err != nil {
		t.Fatal(err)
	}
	if j.InputFile != file || j.Status != jobs.StatusInProgress || j.RequestCounts.Total != len(ids) {
		t.Errorf("job of %s: input %q, %s, total %d", file, j.InputFile, j.Status, j.RequestCounts.Total)
	}
	var set jobs.IDSet
	if err := store.LoadIDs(ctx, j.ID, &set); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if !set.Has(id) {
			t.Errorf("custom_id %s not recorded", id)
		}
	}

	tune := upload("fine-tune", `{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]}`+"\n")
	gone := upload("batch", lines[0]+"\n")
	req, _ := http.NewRequest(http.MethodDelete, url+"/v1/files/"+gone, nil)
	if res, err := http.DefaultClient.Do(req); err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("delete: %v %v", res, err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"purpose", []string{"--file-id", tune}, `purpose "fine-tune"`},
		{"deleted", []string{"--file-id", gone}, "deleted"},
		{"unknown", []string{"--file-id", "file-nothere"}, "no such file"},
		{"both", []string{"x.jsonl", "--file-id", file}, "either FILE or --file-id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := runCLIAs(t, ctx, e, "submit", append([]string{"submit", "--model", "stories"}, tc.args...)...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %v, want %q", err, tc.want)
			}
		})
	}
}

// uploadFile uploads content with the gateway's POST /v1/files and returns
// the file's id.
func uploadFile(t *testing.T, url, purpose, content string) string {
	t.Helper()
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	_ = mw.WriteField("purpose", purpose)
	fw, _ := mw.CreateFormFile("file", "in.jsonl")
	_, _ = fw.Write([]byte(content))
	mw.Close()
	res, err := http.Post(url+"/v1/files", mw.FormDataContentType(), &body)
	if err != nil {
		t.Fatal(err)
	}
	var fo gateway.FileObject
	if code := decodeBody(t, res, &fo); code != http.StatusOK {
		t.Fatalf("upload: %d", code)
	}
	return fo.ID
}
