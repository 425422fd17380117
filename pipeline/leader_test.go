package pipeline_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

// LeaderInfo and LeaderHas read from the stream's leader what Info and Get
// read from any replica: an object's size and digest, nothing for a
// missing or deleted object or key.
func TestLeaderReads(t *testing.T) {
	_, bus := pipelinetest.StartBus(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
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
	for key, want := range map[string]bool{"jobs/j/parts/part-000000.parquet": true, "absent": false, "gone": false} {
		if ok, err := kv.LeaderHas(ctx, key); err != nil || ok != want {
			t.Errorf("LeaderHas(%q) = %v, %v; want %v", key, ok, err, want)
		}
	}
}
