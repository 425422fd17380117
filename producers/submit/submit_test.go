package submit_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/parquet-go/parquet-go"

	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/producers/submit"
	"github.com/largeforge/largeforge/schemas"
)

func write(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// drain reads every message of a stream subject.
func drain(t *testing.T, bus *pipeline.Bus, stream, subject string) []jetstream.Msg {
	t.Helper()
	ctx := context.Background()
	c, err := bus.JetStream().CreateConsumer(ctx, stream, jetstream.ConsumerConfig{FilterSubject: subject, AckPolicy: jetstream.AckExplicitPolicy, InactiveThreshold: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	var out []jetstream.Msg
	for {
		b, err := c.FetchNoWait(1000)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range b.Messages() {
			out = append(out, m)
			n++
		}
		if n == 0 {
			return out
		}
	}
}

func TestSubmitJSONL(t *testing.T) {
	ctx := context.Background()
	_, bus := pipelinetest.StartBus(t)
	in := write(t, "req.jsonl", strings.Join([]string{
		`{"custom_id":"a","prompt":"Once upon a time","max_tokens":4,"temperature":0}`,
		`{"prompt":"no id","max_tokens":4}`,
		``,
		`{"custom_id":"bad","prompt":"x","max_tokens":99999}`,
		`{"custom_id":"a","prompt":"duplicate"}`,
		`{"custom_id":"chat","method":"POST","url":"/v1/chat/completions","body":{"model":"stories","messages":[{"role":"user","content":"hi"}]}}`,
		`not json`,
	}, "\n"))
	s, err := submit.New(ctx, bus, submit.Config{Model: "stories"}, pipelinetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	sum, err := s.Submit(ctx, in, nil)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Rows != 6 || sum.Published != 3 || sum.Rejected != 3 {
		t.Errorf("summary %+v", sum)
	}
	if sum.Job.Status != jobs.StatusInProgress || sum.Job.RequestCounts.Total != 6 {
		t.Errorf("job %+v", sum.Job)
	}
	reqs := drain(t, bus, pipeline.StreamRequests, "lf.req."+sum.Job.ID+".stories")
	var ids []string
	for _, m := range reqs {
		r, err := schemas.DecodeRequest(m.Data())
		if err != nil {
			t.Fatal(err)
		}
		if got := m.Headers().Get(jetstream.MsgIDHeader); got != schemas.MsgID(sum.Job.ID, r.CustomID) {
			t.Errorf("msg id %q for %s", got, r.CustomID)
		}
		ids = append(ids, r.CustomID)
	}
	if fmt.Sprint(ids) != "[a 2 chat]" {
		t.Errorf("request ids %v", ids)
	}
	res := drain(t, bus, pipeline.StreamResults, "lf.res."+sum.Job.ID)
	var rows []string
	for _, m := range res {
		r, err := schemas.DecodeResult(m.Data())
		if err != nil {
			t.Fatal(err)
		}
		if r.Control != "" {
			rows = append(rows, "control:"+r.Control)
			continue
		}
		rows = append(rows, r.CustomID+":"+r.Error.Code+":"+r.Error.Message)
	}
	want := []string{
		"bad:invalid_request:Invalid max_tokens",
		`a#row5:duplicate_custom_id:duplicate custom_id "a" (first on row 1)`,
		"7:invalid_request:line 7 is not a JSON object",
		"control:submitted",
	}
	if fmt.Sprint(rows) != fmt.Sprint(want) {
		t.Errorf("result rows\n got %q\nwant %q", rows, want)
	}
}

func TestSubmitUnreadable(t *testing.T) {
	ctx := context.Background()
	_, bus := pipelinetest.StartBus(t)
	s, err := submit.New(ctx, bus, submit.Config{Model: "stories"}, pipelinetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		path string
	}{
		{"missing file", filepath.Join(t.TempDir(), "nope.jsonl")},
		{"not parquet", write(t, "x.parquet", "PAR1 garbage")},
		{"a directory", t.TempDir()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sum, err := s.Submit(ctx, tt.path, nil)
			if !errors.Is(err, submit.ErrUnreadable) || !strings.Contains(err.Error(), filepath.Base(tt.path)) {
				t.Fatalf("err = %v, want ErrUnreadable naming the file", err)
			}
			if sum.Job.ID != "" {
				t.Errorf("a job was created: %+v", sum.Job)
			}
		})
	}
	// The inputs were checked before anything went into lf_jobs.
	if all, err := s.Store().List(ctx); err != nil || len(all) != 0 {
		t.Fatalf("lf_jobs holds %d jobs (%v), want none", len(all), err)
	}
}

func TestSubmitParquet(t *testing.T) {
	ctx := context.Background()
	_, bus := pipelinetest.StartBus(t)
	type row struct {
		CustomID string `parquet:"custom_id"`
		Text     string `parquet:"text"`
	}
	p := filepath.Join(t.TempDir(), "rows.parquet")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := parquet.Write(f, []row{{"r1", "Once upon a time"}, {"r2", "The cat sat"}, {"r3", ""}}); err != nil {
		t.Fatal(err)
	}
	f.Close()
	s, err := submit.New(ctx, bus, submit.Config{Model: "stories", Kind: jobs.KindScore, CompletionWindow: time.Hour}, pipelinetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	sum, err := s.Submit(ctx, p, nil)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Rows != 3 || sum.Published != 2 || sum.Rejected != 1 || sum.Job.Kind != jobs.KindScore {
		t.Errorf("summary %+v", sum)
	}
	reqs := drain(t, bus, pipeline.StreamRequests, "lf.req."+sum.Job.ID+".>")
	if len(reqs) != 2 {
		t.Fatalf("%d requests", len(reqs))
	}
	r, err := schemas.DecodeRequest(reqs[1].Data())
	if err != nil || r.CustomID != "r2" || r.Score.Text != "The cat sat" {
		t.Errorf("request %+v, %v", r, err)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     submit.Config
		wantErr bool
	}{
		{"ok", submit.Config{Model: "m"}, false},
		{"no model", submit.Config{}, true},
		{"bad kind", submit.Config{Model: "m", Kind: "x"}, true},
		{"negative window", submit.Config{Model: "m", Window: -1}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v", err)
			}
			if err != nil && !errors.Is(err, submit.ErrInvalidOption) {
				t.Errorf("err %v does not wrap ErrInvalidOption", err)
			}
		})
	}
}

// A submission that died midway is resumed under the same job id; a finished
// job is not submitted again.
func TestSubmitResume(t *testing.T) {
	ctx := context.Background()
	_, bus := pipelinetest.StartBus(t)
	store, _ := jobs.Open(ctx, bus)
	// The state a dead submitter leaves: the job validating, one request published.
	if _, err := store.Create(ctx, jobs.Spec{ID: "job-r", Model: "stories"}); err != nil {
		t.Fatal(err)
	}
	in := write(t, "req.jsonl", `{"custom_id":"a","prompt":"x"}`+"\n"+`{"custom_id":"b","prompt":"y"}`)
	s, err := submit.New(ctx, bus, submit.Config{Model: "stories", JobID: "job-r"}, pipelinetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	sum, err := s.Submit(ctx, in, nil)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Job.Status != jobs.StatusInProgress || sum.Job.RequestCounts.Total != 2 {
		t.Errorf("resumed job %+v", sum.Job)
	}
	if _, err := s.Submit(ctx, in, nil); !errors.Is(err, jobs.ErrExists) {
		t.Errorf("second submit of a running job: err = %v, want ErrExists", err)
	}
	if n := len(drain(t, bus, pipeline.StreamRequests, "lf.req.job-r.>")); n != 2 {
		t.Errorf("%d requests queued, want 2", n)
	}
}

// Each request and error row goes out only after its custom_id is recorded
// in lf_jobs (jobs.IDsKey chunks), where the results sink checks results
// against them; a resumed submission cut at other points takes no id away.
func TestSubmitRecordsIDsBeforePublishing(t *testing.T) {
	const rows = 2500 // three chunks
	ctx := context.Background()
	_, bus := pipelinetest.StartBus(t)
	var in strings.Builder
	for i := range rows {
		fmt.Fprintf(&in, `{"custom_id":"row-%d","prompt":"p","max_tokens":4}`+"\n", i)
	}
	in.WriteString(`{"custom_id":"row-0","prompt":"duplicate"}` + "\n")
	path := write(t, "req.jsonl", in.String())

	// One channel for both subjects keeps the order in which the server sent them.
	ch := make(chan *nats.Msg, 4*rows)
	for _, subj := range []string{"$KV.lf_jobs.job-ids.ids.>", "lf.req.job-ids.>", "lf.res.job-ids"} {
		sub, err := bus.Conn().ChanSubscribe(subj, ch)
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
	}
	if err := bus.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	s, err := submit.New(ctx, bus, submit.Config{Model: "stories", JobID: "job-ids", Window: 16}, pipelinetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Submit(ctx, path, nil); err != nil {
		t.Fatal(err)
	}
	recorded := map[string]bool{}
	published := 0
	for published < rows+1 {
		select {
		case m := <-ch:
			if strings.HasPrefix(m.Subject, "$KV.") {
				for _, id := range strings.Split(string(m.Data), "\n") {
					recorded[id] = true
				}
				continue
			}
			published++
			var r struct {
				CustomID string `json:"custom_id"`
			}
			if err := json.Unmarshal(m.Data, &r); err != nil || !recorded[r.CustomID] {
				t.Fatalf("%s %q published before its custom_id was recorded (%v)", m.Subject, r.CustomID, err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%d of %d messages seen", published, rows+1)
		}
	}
	var set jobs.IDSet
	store := s.Store()
	if err := store.LoadIDs(ctx, "job-ids", &set); err != nil {
		t.Fatal(err)
	}
	if set.Len() != rows+1 || !set.Has("row-2499") || !set.Has("row-0#row2501") || set.Has("row-2500") {
		t.Errorf("%d ids recorded, want %d", set.Len(), rows+1)
	}
	// A resumed submission writing a prefix of chunk 0 again leaves it whole.
	if err := store.PutIDs(ctx, "job-ids", 0, []string{"row-0", "row-1"}); err != nil {
		t.Fatal(err)
	}
	var again jobs.IDSet
	if err := store.LoadIDs(ctx, "job-ids", &again); err != nil || again.Len() != rows+1 {
		t.Errorf("after a rewrite of a prefix: %d ids, %v", again.Len(), err)
	}
	if list, err := store.List(ctx); err != nil || len(list) != 1 {
		t.Errorf("List = %d jobs, %v; want the one job, not its id chunks", len(list), err)
	}
}
