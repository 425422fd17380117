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

// TestDefaultLimits: every stream and bucket of the topology has a max age
// or a max size, and only what AgeLimited allows has an age.
func TestDefaultLimits(t *testing.T) {
	l := pipeline.DefaultLimits()
	if err := l.Validate(); err != nil {
		t.Fatal(err)
	}
	topo := pipeline.DefaultTopology(1)
	for _, s := range topo.Streams {
		if s.MaxAge <= 0 && s.MaxBytes <= 0 {
			t.Errorf("stream %s has neither a max age nor a max size", s.Name)
		}
		if s.MaxBytes > 0 && s.Discard != jetstream.DiscardNew {
			t.Errorf("stream %s: a size limit must refuse new messages, not drop old ones", s.Name)
		}
		if _, ok := pipeline.AgeLimited[s.Name]; s.MaxAge > 0 && !ok {
			t.Errorf("stream %s has a max age", s.Name)
		}
		if s.MaxAge > 0 && s.Duplicates > s.MaxAge {
			t.Errorf("stream %s: duplicate window %s past its max age %s", s.Name, s.Duplicates, s.MaxAge)
		}
	}
	for _, kv := range topo.KeyValues {
		if kv.TTL <= 0 && kv.MaxBytes <= 0 {
			t.Errorf("kv bucket %s has neither a TTL nor a max size", kv.Bucket)
		}
	}
	for _, o := range topo.ObjectStores {
		if o.MaxBytes <= 0 {
			t.Errorf("object store %s has no max size", o.Bucket)
		}
	}
	if n := len(topo.Streams) + len(topo.KeyValues) + len(topo.ObjectStores); n != len(l) {
		t.Errorf("%d limits for %d streams and buckets", len(l), n)
	}
}

func TestLimitsSetAndValidate(t *testing.T) {
	tests := []struct {
		name    string
		specs   []string
		want    map[string]pipeline.Limit
		wantErr string
	}{
		{name: "age", specs: []string{"LF_RESULTS=72h"}, want: map[string]pipeline.Limit{"LF_RESULTS": {MaxAge: 72 * time.Hour}}},
		{name: "days", specs: []string{"LF_DLQ=90d"}, want: map[string]pipeline.Limit{"LF_DLQ": {MaxAge: 90 * 24 * time.Hour}}},
		{name: "size", specs: []string{"lf_artifacts=500GiB"}, want: map[string]pipeline.Limit{"lf_artifacts": {MaxBytes: 500 << 30}}},
		{name: "decimal size", specs: []string{"LF_REQUESTS=2GB"}, want: map[string]pipeline.Limit{"LF_REQUESTS": {MaxBytes: 2e9}}},
		{name: "age and size", specs: []string{"LF_RESULTS=1h", "LF_RESULTS=10GiB"}, want: map[string]pipeline.Limit{"LF_RESULTS": {MaxAge: time.Hour, MaxBytes: 10 << 30}}},
		{name: "none", specs: []string{"lf_models=0"}, want: map[string]pipeline.Limit{"lf_models": {}}},
		{name: "age on a work queue", specs: []string{"LF_REQUESTS=24h"}, wantErr: "no max age allowed"},
		{name: "age on job records", specs: []string{"lf_jobs=24h"}, wantErr: "no max age allowed"},
		{name: "age on results objects", specs: []string{"lf_artifacts=30d"}, wantErr: "no max age allowed"},
		{name: "heartbeats without a TTL", specs: []string{"lf_workers=0"}, wantErr: "heartbeat TTL"},
		{name: "unknown name", specs: []string{"LF_NOPE=1h"}, wantErr: `"LF_NOPE": not a stream or bucket`},
		{name: "no value", specs: []string{"LF_RESULTS="}, wantErr: "want NAME=DURATION or NAME=SIZE"},
		{name: "bad value", specs: []string{"LF_RESULTS=lots"}, wantErr: "neither a duration"},
		{name: "size without unit", specs: []string{"lf_models=100"}, wantErr: "neither a duration"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := pipeline.DefaultLimits()
			var err error
			for _, s := range tc.specs {
				if err = l.Set(s); err != nil {
					break
				}
			}
			if err == nil {
				err = l.Validate()
			}
			if tc.wantErr != "" {
				if err == nil || !errors.Is(err, pipeline.ErrInvalidOption) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want ErrInvalidOption with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for name, want := range tc.want {
				if l[name] != want {
					t.Errorf("%s: %+v, want %+v", name, l[name], want)
				}
			}
		})
	}
}

// TestApplyLimits: topology apply sets the declared limits on the server,
// an override among them, and EnsureTopology (any admin command, KeepLimits)
// leaves what an operator applied.
func TestApplyLimits(t *testing.T) {
	_, bus := pipelinetest.StartBus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l := pipeline.DefaultLimits()
	for _, s := range []string{"LF_RESULTS=72h", "lf_artifacts=9GiB", "lf_jobs=128MiB"} {
		if err := l.Set(s); err != nil {
			t.Fatal(err)
		}
	}
	topo, err := pipeline.DefaultTopology(1).WithLimits(l)
	if err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		t.Helper()
		js := bus.JetStream()
		for name, want := range map[string]pipeline.Limit{
			"LF_RESULTS":       {MaxAge: 72 * time.Hour},
			"LF_REQUESTS":      {MaxBytes: 1 << 30},
			"OBJ_lf_artifacts": {MaxBytes: 9 << 30},
			"KV_lf_jobs":       {MaxBytes: 128 << 20},
			"KV_lf_workers":    {MaxAge: pipeline.WorkerHeartbeatTTL, MaxBytes: 16 << 20},
		} {
			s, err := js.Stream(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			c := s.CachedInfo().Config
			if c.MaxAge != want.MaxAge || max(c.MaxBytes, 0) != want.MaxBytes {
				t.Errorf("%s: %s max age %s, max bytes %d; want %+v", when, name, c.MaxAge, c.MaxBytes, want)
			}
			if want.MaxBytes > 0 && c.Discard != jetstream.DiscardNew {
				t.Errorf("%s: %s discards %s, want new", when, name, c.Discard)
			}
		}
	}
	if err := bus.ApplyTopology(ctx, topo); err != nil {
		t.Fatal(err)
	}
	check("applied")
	if err := bus.EnsureTopology(ctx); err != nil {
		t.Fatal(err)
	}
	check("after EnsureTopology")
}

// TestFullWorkQueueRefuses: a work queue at its size limit refuses a new
// request (the publisher sees the error) and keeps every queued one.
func TestFullWorkQueueRefuses(t *testing.T) {
	_, bus := pipelinetest.StartBus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l := pipeline.DefaultLimits()
	if err := l.Set("LF_REQUESTS=4KiB"); err != nil {
		t.Fatal(err)
	}
	topo, err := pipeline.DefaultTopology(1).WithLimits(l)
	if err != nil {
		t.Fatal(err)
	}
	if err := bus.ApplyTopology(ctx, topo); err != nil {
		t.Fatal(err)
	}
	js := bus.JetStream()
	subj, _ := pipeline.RequestSubject("j1", "m")
	var accepted uint64
	var refused error
	for range 100 {
		if _, err := js.Publish(ctx, subj, []byte(strings.Repeat("r", 200))); err != nil {
			refused = err
			break
		}
		accepted++
	}
	if refused == nil {
		t.Fatal("a full LF_REQUESTS accepted every request")
	}
	if !strings.Contains(refused.Error(), "maximum bytes exceeded") {
		t.Errorf("refusal %v, want maximum bytes exceeded", refused)
	}
	s, err := js.Stream(ctx, pipeline.StreamRequests)
	if err != nil {
		t.Fatal(err)
	}
	if st := s.CachedInfo().State; st.Msgs != accepted || st.FirstSeq != 1 {
		t.Errorf("queue holds %d from seq %d, want the %d accepted from 1", st.Msgs, st.FirstSeq, accepted)
	}
}
