package pipeline_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

// LeaderInfo and LeaderHas read from the stream's leader what Info and Get
// read from any replica: an object's size and digest, nothing for a
// missing or deleted object or key. They ask the STREAM.MSG.GET API (which
// only a stream's leader answers), never DIRECT.GET (any replica).
func TestLeaderReads(t *testing.T) {
	srv, bus := pipelinetest.StartBus(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Another connection sees the API requests the reads make.
	spy := pipelinetest.Connect(t, srv).Conn()
	var msgGets atomic.Int64
	if _, err := spy.Subscribe("$JS.API.STREAM.MSG.GET.>", func(*nats.Msg) { msgGets.Add(1) }); err != nil {
		t.Fatal(err)
	}
	if err := spy.Flush(); err != nil {
		t.Fatal(err)
	}
	objs, err := bus.Objects(ctx, pipeline.BucketArtifacts)
	if err != nil {
		t.Fatal(err)
	}
	put, err := objs.Put(ctx, "jobs/j/parts/part-000000.parquet", bytes.NewReader([]byte("rows")))
	if err != nil {
		t.Fatal(err)
	}
	info, err := objs.LeaderInfo(ctx, "jobs/j/parts/part-000000.parquet")
	if err != nil || info.Size != 4 || info.Digest != put.Digest || info.ModTime.IsZero() {
		t.Errorf("leader info %+v, %v; put %+v", info, err, put)
	}
	if _, err := objs.LeaderInfo(ctx, "absent"); !errors.Is(err, pipeline.ErrObjectNotFound) {
		t.Errorf("absent: %v", err)
	}
	if err := objs.Delete(ctx, "jobs/j/parts/part-000000.parquet"); err != nil {
		t.Fatal(err)
	}
	if _, err := objs.LeaderInfo(ctx, "jobs/j/parts/part-000000.parquet"); !errors.Is(err, pipeline.ErrObjectNotFound) {
		t.Errorf("deleted: %v", err)
	}

	kv, err := bus.KV(ctx, pipeline.BucketClaims)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Create(ctx, "jobs/j/parts/part-000000.parquet", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "gone", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	raw, err := bus.JetStream().KeyValue(ctx, pipeline.BucketClaims)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Put(ctx, "purged", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := raw.Purge(ctx, "purged"); err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]bool{"jobs/j/parts/part-000000.parquet": true, "absent": false, "gone": false, "purged": false} {
		if ok, err := kv.LeaderHas(ctx, key); err != nil || ok != want {
			t.Errorf("LeaderHas(%q) = %v, %v; want %v", key, ok, err, want)
		}
	}
	if _, err := kv.LeaderHas(ctx, "jobs.>"); err == nil {
		t.Error("LeaderHas took a wildcard for a key")
	}
	// 3 LeaderInfo and 4 LeaderHas, each one message get (Info and Get
	// would have made none).
	pipelinetest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := msgGets.Load(); n != 7 {
			return fmt.Errorf("%d STREAM.MSG.GET requests seen, want 7", n)
		}
		return nil
	})
}
