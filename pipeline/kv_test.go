package pipeline_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

// jobsKV is lf_jobs of a fresh bus, with a context for a minute.
func jobsKV(t *testing.T) (context.Context, *pipeline.KV) {
	t.Helper()
	_, b := pipelinetest.StartBus(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	kv, err := b.KV(ctx, pipeline.BucketJobs)
	if err != nil {
		t.Fatal(err)
	}
	return ctx, kv
}

func TestKV(t *testing.T) {
	ctx, kv := jobsKV(t)
	if keys, err := kv.Keys(ctx); err != nil || len(keys) != 0 {
		t.Fatalf("Keys of an empty bucket = %v, %v", keys, err)
	}
	rev, err := kv.Create(ctx, "a", []byte("1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Update(ctx, "a", []byte("2"), rev); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		op      func() error
		wantErr error
	}{
		{"get", func() error { _, err := kv.Get(ctx, "a"); return err }, nil},
		{"get missing", func() error { _, err := kv.Get(ctx, "nope"); return err }, pipeline.ErrKeyNotFound},
		{"create existing", func() error { _, err := kv.Create(ctx, "a", nil); return err }, pipeline.ErrKeyExists},
		{"update stale", func() error { _, err := kv.Update(ctx, "a", nil, rev); return err }, pipeline.ErrWrongRevision},
		{"put", func() error { _, err := kv.Put(ctx, "b", []byte("x")); return err }, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.op(); !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
		})
	}
	if e, err := kv.Get(ctx, "a"); err != nil || string(e.Value) != "2" || e.Revision <= rev {
		t.Fatalf("Get a = %+v, %v", e, err)
	}
	if keys, err := kv.Keys(ctx); err != nil || strings.Join(keys, ",") != "a,b" {
		t.Fatalf("Keys = %v, %v", keys, err)
	}

	w, err := kv.Watch(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	if e, err := w.Next(ctx); err != nil || e == nil || string(e.Value) != "2" {
		t.Fatalf("first Next = %+v, %v; want the current value", e, err)
	}
	if e, err := w.Next(ctx); err != nil || e != nil {
		t.Fatalf("second Next = %+v, %v; want the end of the initial values", e, err)
	}
	if err := kv.Delete(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if e, err := w.Next(ctx); err != nil || e == nil || !e.Deleted {
		t.Fatalf("Next after Delete = %+v, %v", e, err)
	}
}

func TestHeartbeat(t *testing.T) {
	_, b := pipelinetest.StartBus(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	kv, err := b.KV(ctx, pipeline.BucketWorkers)
	if err != nil {
		t.Fatal(err)
	}
	hctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		kv.Heartbeat(hctx, "infer.w1", time.Hour, func() []byte { return []byte("alive") }, pipelinetest.Logger(t))
	}()
	pipelinetest.CheckFor(t, time.Minute, 10*time.Millisecond, func() error {
		_, err := kv.Get(ctx, "infer.w1")
		return err
	})
	stop()
	<-done
	if _, err := kv.Get(ctx, "infer.w1"); !errors.Is(err, pipeline.ErrKeyNotFound) {
		t.Fatalf("after the heartbeat stopped: %v, want ErrKeyNotFound", err)
	}
}

func TestObjects(t *testing.T) {
	_, b := pipelinetest.StartBus(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	objs, err := b.Objects(ctx, pipeline.BucketModels)
	if err != nil {
		t.Fatal(err)
	}
	if infos, err := objs.List(ctx); err != nil || len(infos) != 0 {
		t.Fatalf("List of an empty store = %v, %v", infos, err)
	}
	if _, err := objs.Put(ctx, "m/config.json", strings.NewReader("{}")); err != nil {
		t.Fatal(err)
	}
	infos, err := objs.List(ctx)
	if err != nil || len(infos) != 1 || infos[0].Name != "m/config.json" || infos[0].Size != 2 || !strings.HasPrefix(infos[0].Digest, "SHA-256=") {
		t.Fatalf("List = %+v, %v", infos, err)
	}
	path := filepath.Join(t.TempDir(), "config.json")
	if err := objs.GetFile(ctx, "m/config.json", path); err != nil {
		t.Fatal(err)
	}
	if data, err := os.ReadFile(path); err != nil || string(data) != "{}" {
		t.Fatalf("GetFile wrote %q, %v", data, err)
	}
}

// Values returns the current value of each key its filter matches, in one
// pass: "*" only the keys of one token, ">" all of them; deleted keys and
// earlier revisions are left out; an empty bucket has none.
func TestKVValues(t *testing.T) {
	ctx, kv := jobsKV(t)
	if got, err := kv.Values(ctx, ">"); err != nil || len(got) != 0 {
		t.Fatalf("Values of an empty bucket = %v, %v", got, err)
	}
	for _, kv2 := range [][2]string{{"a", "1"}, {"a", "2"}, {"b", "3"}, {"b.ids.0", "4"}, {"gone", "5"}} {
		if _, err := kv.Put(ctx, kv2[0], []byte(kv2[1])); err != nil {
			t.Fatal(err)
		}
	}
	if err := kv.Delete(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ filter, want string }{
		{"*", "a=2 b=3"},
		{">", "a=2 b=3 b.ids.0=4"},
		{"b", "b=3"},
	} {
		got, err := kv.Values(ctx, tt.filter)
		if err != nil {
			t.Fatal(err)
		}
		var s []string
		for _, e := range got {
			s = append(s, e.Key+"="+string(e.Value))
			if e.Revision == 0 {
				t.Errorf("%s: no revision", e.Key)
			}
		}
		if strings.Join(s, " ") != tt.want {
			t.Errorf("Values(%q) = %v, want %s", tt.filter, s, tt.want)
		}
	}
}
