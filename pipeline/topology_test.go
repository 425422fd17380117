package pipeline_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

func TestValidToken(t *testing.T) {
	tests := []struct {
		name    string
		tok     string
		wantErr bool
	}{
		{name: "plain", tok: "alpaca-2024_v1"},
		{name: "unicode", tok: "données"},
		{name: "empty", tok: "", wantErr: true},
		{name: "dot", tok: "a.b", wantErr: true},
		{name: "star", tok: "a*", wantErr: true},
		{name: "gt", tok: ">", wantErr: true},
		{name: "space", tok: "a b", wantErr: true},
		{name: "tab", tok: "a\tb", wantErr: true},
		{name: "newline", tok: "a\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := pipeline.ValidToken(tt.tok)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ValidToken(%q) = %v, wantErr %v", tt.tok, err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, pipeline.ErrInvalidOption) {
				t.Errorf("error does not wrap ErrInvalidOption: %v", err)
			}
		})
	}
}

func TestSubjects(t *testing.T) {
	must := func(s string, err error) string {
		t.Helper()
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return s
	}
	tests := []struct {
		name string
		got  string
		want string
	}{
		{name: "raw", got: must(pipeline.DatasetRawSubject("ds1")), want: "lf.data.ds1.raw"},
		{name: "shard", got: must(pipeline.DatasetShardSubject("ds1")), want: "lf.data.ds1.shard"},
		{name: "request", got: must(pipeline.RequestSubject("job1", "stories260K")), want: "lf.req.job1.stories260K"},
		{name: "route", got: must(pipeline.RouteSubject("job1")), want: "lf.route.job1"},
		{name: "result", got: must(pipeline.ResultSubject("job1")), want: "lf.res.job1"},
		{name: "dlq", got: must(pipeline.DLQSubject("infer", "job1")), want: "lf.dlq.infer.job1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("got %q, want %q", tt.got, tt.want)
			}
		})
	}
	filters := []struct {
		name string
		got  string
		want string
	}{
		{name: "request by model", got: must(pipeline.RequestFilter(pipeline.AnyToken, "stories260K")), want: "lf.req.*.stories260K"},
		{name: "request by job", got: must(pipeline.RequestFilter("job1", pipeline.AnyToken)), want: "lf.req.job1.*"},
		{name: "raw", got: must(pipeline.DatasetRawFilter(pipeline.AnyToken)), want: "lf.data.*.raw"},
		{name: "shard", got: must(pipeline.DatasetShardFilter("ds")), want: "lf.data.ds.shard"},
		{name: "route", got: must(pipeline.RouteFilter(pipeline.AnyToken)), want: "lf.route.*"},
		{name: "result", got: must(pipeline.ResultFilter("job1")), want: "lf.res.job1"},
		{name: "dlq", got: must(pipeline.DLQFilter("ingest", pipeline.AnyToken)), want: "lf.dlq.ingest.*"},
	}
	for _, tt := range filters {
		if tt.got != tt.want {
			t.Errorf("%s filter: got %q, want %q", tt.name, tt.got, tt.want)
		}
	}
	bad := []func() (string, error){
		func() (string, error) { return pipeline.RequestSubject(pipeline.AnyToken, "m") },
		func() (string, error) { return pipeline.RequestFilter("a.b", "m") },
		func() (string, error) { return pipeline.DLQFilter(">", "x") },
		func() (string, error) { return pipeline.DatasetRawFilter("") },
		func() (string, error) { return pipeline.DatasetRawSubject("a.b") },
		func() (string, error) { return pipeline.RequestSubject("job", "") },
		func() (string, error) { return pipeline.RequestSubject("j*", "m") },
		func() (string, error) { return pipeline.DLQSubject("in fer", "job") },
	}
	for i, f := range bad {
		if s, err := f(); err == nil {
			t.Errorf("bad subject %d: got %q, want an error", i, s)
		}
	}
}

func TestEnsureTopologyIdempotentAndSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	e := pipelinetest.StartServerWith(t, pipeline.EmbeddedConfig{DataDir: dir})
	b := pipelinetest.Connect(t, e)
	for i := range 2 {
		if err := b.EnsureTopology(ctx); err != nil {
			t.Fatalf("EnsureTopology #%d: %v", i+1, err)
		}
	}
	subj, _ := pipeline.DatasetRawSubject("ds")
	for _, id := range []string{"a", "b", "c"} {
		if _, err := b.Publish(ctx, subj, []byte("record "+id), "ds/"+id, nil); err != nil {
			t.Fatal(err)
		}
	}
	kv, err := b.KV(ctx, pipeline.BucketJobs)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "job1", []byte(`{"state":"running"}`)); err != nil {
		t.Fatal(err)
	}
	b.Close()
	e.Shutdown()

	e2 := pipelinetest.StartServerWith(t, pipeline.EmbeddedConfig{DataDir: dir})
	b2 := pipelinetest.Connect(t, e2)
	if err := b2.EnsureTopology(ctx); err != nil {
		t.Fatalf("EnsureTopology after restart: %v", err)
	}
	s, err := b2.JetStream().Stream(ctx, pipeline.StreamDatasets)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 3 {
		t.Errorf("after restart %s has %d msgs, want 3", pipeline.StreamDatasets, info.State.Msgs)
	}
	cfg := info.Config
	if cfg.Retention != jetstream.LimitsPolicy || cfg.Storage != jetstream.FileStorage || cfg.Duplicates != 2*time.Minute || cfg.MaxMsgSize != 1<<20 {
		t.Errorf("stream config = retention %v storage %v duplicates %v max msg %d", cfg.Retention, cfg.Storage, cfg.Duplicates, cfg.MaxMsgSize)
	}
	rq, err := b2.JetStream().Stream(ctx, pipeline.StreamRequests)
	if err != nil {
		t.Fatal(err)
	}
	if r := rq.CachedInfo().Config.Retention; r != jetstream.WorkQueuePolicy {
		t.Errorf("%s retention = %v, want work queue", pipeline.StreamRequests, r)
	}
	kv2, err := b2.KV(ctx, pipeline.BucketJobs)
	if err != nil {
		t.Fatal(err)
	}
	if ent, err := kv2.Get(ctx, "job1"); err != nil || string(ent.Value) != `{"state":"running"}` {
		t.Errorf("kv after restart: %v %v", ent, err)
	}
	w, err := b2.JetStream().KeyValue(ctx, pipeline.BucketWorkers)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := w.Status(ctx); err != nil || st.TTL() != 30*time.Second {
		t.Errorf("%s TTL: %v %v", pipeline.BucketWorkers, st, err)
	}
	for _, bucket := range []string{pipeline.BucketExperts, pipeline.BucketDatasets} {
		if _, err := b2.KV(ctx, bucket); err != nil {
			t.Error(err)
		}
	}
	if _, err := b2.Objects(ctx, pipeline.BucketModels); err != nil {
		t.Error(err)
	}
}

// An existing stream with a retention we cannot change is left alone, with its data.
func TestEnsureTopologyLeavesIncompatibleStream(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e := pipelinetest.StartServer(t)
	b := pipelinetest.Connect(t, e)
	if _, err := b.JetStream().CreateStream(ctx, jetstream.StreamConfig{
		Name: pipeline.StreamRequests, Subjects: []string{"lf.req.>"}, Retention: jetstream.LimitsPolicy, Storage: jetstream.FileStorage,
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Publish(ctx, "lf.req.j.m", []byte("x"), "", nil); err != nil {
		t.Fatal(err)
	}
	if err := b.EnsureTopology(ctx); err != nil {
		t.Fatalf("EnsureTopology with an incompatible stream: %v", err)
	}
	s, err := b.JetStream().Stream(ctx, pipeline.StreamRequests)
	if err != nil {
		t.Fatal(err)
	}
	info := s.CachedInfo()
	if info.Config.Retention != jetstream.LimitsPolicy || info.State.Msgs != 1 {
		t.Errorf("incompatible stream was changed: retention %v msgs %d", info.Config.Retention, info.State.Msgs)
	}
	// A compatible difference (duplicate window) is updated in place.
	if _, err := b.JetStream().UpdateStream(ctx, jetstream.StreamConfig{
		Name: pipeline.StreamRoutes, Subjects: []string{"lf.route.>"}, Storage: jetstream.FileStorage, Duplicates: time.Minute,
	}); err != nil {
		t.Fatal(err)
	}
	if err := b.EnsureTopology(ctx); err != nil {
		t.Fatal(err)
	}
	rs, err := b.JetStream().Stream(ctx, pipeline.StreamRoutes)
	if err != nil {
		t.Fatal(err)
	}
	if d := rs.CachedInfo().Config.Duplicates; d != pipeline.DuplicateWindow {
		t.Errorf("duplicate window = %v, want %v", d, pipeline.DuplicateWindow)
	}
}

// TestCheckTopology: CheckTopology changes nothing and names each stream,
// bucket and object store missing; Only picks a role's part.
func TestCheckTopology(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e := pipelinetest.StartServer(t)
	b := pipelinetest.Connect(t, e)
	full := pipeline.DefaultTopology(1)
	part := full.Only(pipeline.StreamResults, pipeline.BucketJobs, pipeline.BucketModels)
	if len(part.Streams) != 1 || len(part.KeyValues) != 1 || len(part.ObjectStores) != 1 {
		t.Fatalf("Only = %+v", part)
	}
	err := b.CheckTopology(ctx, part)
	if !errors.Is(err, pipeline.ErrTopologyMissing) {
		t.Fatalf("CheckTopology on an empty server = %v, want ErrTopologyMissing", err)
	}
	for _, name := range []string{"stream LF_RESULTS", "kv bucket lf_jobs", "object store lf_models"} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("%v does not name %s", err, name)
		}
	}
	if n := len(streamNames(ctx, t, b)); n != 0 {
		t.Fatalf("CheckTopology created %d streams", n)
	}
	if err := b.ApplyTopology(ctx, part); err != nil {
		t.Fatal(err)
	}
	if err := b.CheckTopology(ctx, part); err != nil {
		t.Errorf("CheckTopology after applying the part: %v", err)
	}
	err = b.CheckTopology(ctx, full)
	if !errors.Is(err, pipeline.ErrTopologyMissing) || !strings.Contains(err.Error(), "stream LF_REQUESTS") || strings.Contains(err.Error(), "LF_RESULTS") {
		t.Errorf("CheckTopology of the whole = %v, want LF_REQUESTS and not LF_RESULTS missing", err)
	}
}

func streamNames(ctx context.Context, t *testing.T, b *pipeline.Bus) []string {
	t.Helper()
	var out []string
	l := b.JetStream().StreamNames(ctx)
	for n := range l.Name() {
		out = append(out, n)
	}
	if err := l.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// The artifacts of issue 15: lf_artifacts, LF_EVENTS (limits, max age),
// lf_dedupe and lf_claims, each with the topology's replicas, applied and
// checked like the rest.
func TestDefaultTopologyArtifacts(t *testing.T) {
	topo := pipeline.DefaultTopology(3)
	art := topo.Only(pipeline.BucketArtifacts, pipeline.StreamEvents, pipeline.BucketDedupe, pipeline.BucketClaims)
	if len(art.Streams) != 1 || len(art.KeyValues) != 2 || len(art.ObjectStores) != 1 {
		t.Fatalf("Only(artifacts) = %+v", art)
	}
	ev := art.Streams[0]
	if ev.Retention != jetstream.LimitsPolicy || ev.MaxAge != pipeline.EventsMaxAge || ev.MaxAge == 0 || ev.Replicas != 3 ||
		len(ev.Subjects) != 1 || ev.Subjects[0] != "lf.events.train.>" {
		t.Errorf("LF_EVENTS = %+v", ev)
	}
	for _, kv := range art.KeyValues {
		if kv.Replicas != 3 || kv.Storage != jetstream.FileStorage {
			t.Errorf("%s: replicas %d storage %v", kv.Bucket, kv.Replicas, kv.Storage)
		}
	}
	if o := art.ObjectStores[0]; o.Replicas != 3 || o.Storage != jetstream.FileStorage {
		t.Errorf("%s: replicas %d storage %v", o.Bucket, o.Replicas, o.Storage)
	}
	if s, err := pipeline.TrainEventSubject("job-1"); err != nil || s != "lf.events.train.job-1" {
		t.Errorf("TrainEventSubject = %q, %v", s, err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b := pipelinetest.Connect(t, pipelinetest.StartServer(t))
	one := pipeline.DefaultTopology(1).Only(pipeline.BucketArtifacts, pipeline.StreamEvents, pipeline.BucketDedupe, pipeline.BucketClaims)
	if err := b.CheckTopology(ctx, one); !errors.Is(err, pipeline.ErrTopologyMissing) {
		t.Fatalf("CheckTopology before = %v", err)
	}
	if err := b.EnsureTopology(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.CheckTopology(ctx, one); err != nil {
		t.Errorf("CheckTopology after EnsureTopology: %v", err)
	}
	subj, _ := pipeline.TrainEventSubject("job-1")
	if _, err := b.Publish(ctx, subj, []byte(`{"step":1}`), "job-1/1", nil); err != nil {
		t.Errorf("publish a training event: %v", err)
	}
}
