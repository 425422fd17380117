package pipeline_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

// TestObjectStream: a put object streams back byte-equal with its metadata; a
// missing name is ErrObjectNotFound for Get, Info and Delete; a deleted
// object leaves the listing.
func TestObjectStream(t *testing.T) {
	_, bus := pipelinetest.StartBus(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	objs, err := bus.Objects(ctx, pipeline.BucketModels)
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 3<<20+17) // several chunks
	_, _ = rand.Read(data)
	info, err := objs.PutWithMetadata(ctx, "m/v1/weights", map[string]string{"kind": "test"}, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if info.Size != uint64(len(data)) || info.Digest == "" {
		t.Errorf("put info %+v", info)
	}
	r, err := objs.Get(ctx, "m/v1/weights")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	r.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes (err %v), want %d equal", len(got), err, len(data))
	}
	if r.Info().Metadata["kind"] != "test" {
		t.Errorf("metadata %v", r.Info().Metadata)
	}
	if _, err := objs.Get(ctx, "absent"); !errors.Is(err, pipeline.ErrObjectNotFound) {
		t.Errorf("get absent: %v", err)
	}
	if _, err := objs.Info(ctx, "absent"); !errors.Is(err, pipeline.ErrObjectNotFound) {
		t.Errorf("info absent: %v", err)
	}
	if err := objs.Delete(ctx, "m/v1/weights"); err != nil {
		t.Fatal(err)
	}
	if err := objs.Delete(ctx, "m/v1/weights"); !errors.Is(err, pipeline.ErrObjectNotFound) {
		t.Errorf("delete twice: %v", err)
	}
	list, err := objs.List(ctx)
	if err != nil || len(list) != 0 {
		t.Errorf("list after delete: %+v %v", list, err)
	}
}
