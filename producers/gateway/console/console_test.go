package console_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/producers/gateway/console"
)

const testKey = "console-test-key"

func newServer(t *testing.T) (*httptest.Server, *jobs.Store) {
	t.Helper()
	_, bus := pipelinetest.StartBus(t)
	c, err := console.New(bus, console.Options{Log: pipelinetest.Logger(t), Authorized: func(r *http.Request) bool {
		return r.Header.Get("Authorization") == "Bearer "+testKey
	}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(c.Handler())
	t.Cleanup(srv.Close)
	store, err := jobs.Open(context.Background(), bus)
	if err != nil {
		t.Fatal(err)
	}
	return srv, store
}

func get(t *testing.T, method, url, key string) (int, http.Header, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(body)
}

// The endpoints take the API key, unknown ids are 404s with a message (no
// stack trace), pages are served without data and the cancel endpoint goes
// through the job's cancel path (a finished job is a 409).
func TestConsoleEndpoints(t *testing.T) {
	srv, store := newServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	done, err := store.Create(ctx, jobs.Spec{Model: "m"})
	if err != nil {
		t.Fatal(err)
	}
	for _, to := range []jobs.Status{jobs.StatusInProgress, jobs.StatusFinalizing, jobs.StatusCompleted} {
		if _, err := store.Transition(ctx, done.ID, to, nil); err != nil {
			t.Fatal(err)
		}
	}
	queued, err := store.Create(ctx, jobs.Spec{Model: "m"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, method, path, key string
		status                  int
		body                    string
	}{
		{"no key", "GET", "/console/api/jobs", "", 401, "Invalid API key"},
		{"wrong key", "GET", "/console/api/jobs", "wrong-key-123", 401, "Invalid API key"},
		{"jobs", "GET", "/console/api/jobs", testKey, 200, queued.ID},
		{"a job", "GET", "/console/api/jobs/" + done.ID, testKey, 200, `"status":"completed"`},
		{"unknown job", "GET", "/console/api/jobs/batch_000000000000000000000000", testKey, 404, `No job \"batch_000000000000000000000000\"`},
		{"not a job id", "GET", "/console/api/jobs/a.b", testKey, 404, "not a job id"},
		{"events of unknown job", "GET", "/console/api/jobs/nope/events", testKey, 404, `No job \"nope\"`},
		{"unknown dataset", "GET", "/console/api/datasets/nope", testKey, 404, `No dataset \"nope\"`},
		{"unknown endpoint", "GET", "/console/api/bogus", testKey, 404, "Unknown console endpoint"},
		{"cancel without key", "POST", "/console/api/jobs/" + queued.ID + "/cancel", "", 401, "Invalid API key"},
		{"cancel a finished job", "POST", "/console/api/jobs/" + done.ID + "/cancel", testKey, 409, "illegal"},
		{"cancel", "POST", "/console/api/jobs/" + queued.ID + "/cancel", testKey, 200, `"status":"cancelling"`},
		{"GET on cancel", "GET", "/console/api/jobs/" + queued.ID + "/cancel", testKey, 405, "answers POST"},
		{"DELETE on a job", "DELETE", "/console/api/jobs/" + queued.ID, testKey, 405, "answers GET, HEAD"},
		{"page", "GET", "/console/jobs", "", 200, `<main id="main">`},
		{"page with id", "GET", "/console/jobs/anything", "", 200, `<main id="main">`},
		{"no such page", "GET", "/console/bogus", "", 404, `<main id="main">`},
		{"script", "GET", "/console/static/app.js", "", 200, "function render()"},
		{"datasets", "GET", "/console/api/datasets", testKey, 200, `{"data":[]}`},
		{"workers", "GET", "/console/api/workers", testKey, 200, `"data":[]`},
		{"experts", "GET", "/console/api/experts", testKey, 200, `"decisions":[]`},
		{"models", "GET", "/console/api/models", testKey, 200, `{"data":[]}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, hdr, body := get(t, tc.method, srv.URL+tc.path, tc.key)
			if status != tc.status || !strings.Contains(body, tc.body) {
				t.Errorf("%s %s: %d %q, want %d with %q", tc.method, tc.path, status, body, tc.status, tc.body)
			}
			if want := map[int]string{405: strings.TrimPrefix(tc.body, "answers ")}[status]; hdr.Get("Allow") != want {
				t.Errorf("%s %s: Allow %q, want %q", tc.method, tc.path, hdr.Get("Allow"), want)
			}
			if strings.Contains(body, "goroutine") || strings.Contains(body, ".go:") {
				t.Errorf("body looks like a stack trace: %s", body)
			}
			if !strings.Contains(hdr.Get("Content-Security-Policy"), "default-src 'self'") {
				t.Errorf("CSP %q", hdr.Get("Content-Security-Policy"))
			}
		})
	}
	j, err := store.Get(ctx, queued.ID)
	if err != nil || j.Status != jobs.StatusCancelling {
		t.Errorf("after the console's cancel: %v %v, want cancelling", j.Status, err)
	}
	var e struct {
		Error struct{ Message, Code string }
	}
	_, _, body := get(t, "GET", srv.URL+"/console/api/jobs/nope", testKey)
	if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error.Code != "not_found" {
		t.Errorf("error body %s: %v", body, err)
	}
}

// The pages load nothing from elsewhere: no absolute URL in the embedded
// files, and every script and stylesheet they name is served by the console.
func TestNoExternalResources(t *testing.T) {
	srv, _ := newServer(t)
	_, _, page := get(t, "GET", srv.URL+"/console/", "")
	for _, name := range []string{"index.html", "app.js", "style.css"} {
		status, hdr, body := get(t, "GET", srv.URL+"/console/static/"+name, "")
		if status != 200 {
			t.Fatalf("%s: %d", name, status)
		}
		for _, bad := range []string{"http://", "https://", "//cdn", "@import"} {
			if strings.Contains(body, bad) {
				t.Errorf("%s holds %q", name, bad)
			}
		}
		if name != "index.html" && !strings.Contains(page, "/console/static/"+name) {
			t.Errorf("index.html does not load %s", name)
		}
		if hdr.Get("Content-Type") == "" {
			t.Errorf("%s has no content type", name)
		}
	}
}
