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

// modelObjects is lf_models of a fresh bus, with a context for a minute.
func modelObjects(t *testing.T) (context.Context, *pipeline.Objects) {
	t.Helper()
	_, bus := pipelinetest.StartBus(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	objs, err := bus.Objects(ctx, pipeline.BucketModels)
	if err != nil {
		t.Fatal(err)
	}
	return ctx, objs
}

// TestObjectStream: a put object streams back byte-equal with its metadata; a
// missing name is ErrObjectNotFound for Get, Info and Delete; a deleted
// object leaves the listing.
func TestObjectStream(t *testing.T) {
	ctx, objs := modelObjects(t)
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

// TestObjectSlowReader: a Get with no deadline on its context survives a
// reader that stops for longer than the client's default timeout (5 s)
// between two reads; jetstream's own Get failed it with "read pipe: i/o
// timeout". The pause stands for a slow disk, not a speed assumed.
func TestObjectSlowReader(t *testing.T) {
	if testing.Short() {
		t.Skip("pauses a reader for 6 s (make test runs it)")
	}
	_, objs := modelObjects(t)
	ctx := context.Background() // no deadline, as a CLI's
	data, r, head := putReadHead(ctx, t, objs, 1<<20)
	time.Sleep(6 * time.Second)
	rest, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read after a pause: %v", err)
	}
	if got := append(head, rest...); !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes, want %d equal", len(got), len(data))
	}
}

// putReadHead puts size random bytes as "obj", opens it (closed when the
// test ends) and reads its first 1000 bytes.
func putReadHead(ctx context.Context, t *testing.T, objs *pipeline.Objects, size int) (data []byte, r *pipeline.ObjectReader, head []byte) {
	t.Helper()
	data = make([]byte, size)
	_, _ = rand.Read(data)
	if _, err := objs.Put(ctx, "obj", bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	r, err := objs.Get(ctx, "obj")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	head = make([]byte, 1000)
	if _, err := io.ReadFull(r, head); err != nil {
		t.Fatal(err)
	}
	return data, r, head
}

// TestObjectWriteTo: io.Copy takes the reader's WriteTo, which writes the
// chunks left after a partial Read straight to the writer (writes larger
// than io.Copy's 32 KiB buffer), ends without error when the object is
// whole, and leaves the reader at io.EOF.
func TestObjectWriteTo(t *testing.T) {
	ctx, objs := modelObjects(t)
	data, r, head := putReadHead(ctx, t, objs, 2<<20+5)
	var rest onlyWriter
	n, err := io.Copy(&rest, r)
	if err != nil || n != int64(len(data)-len(head)) {
		t.Fatalf("copy: %d bytes, %v", n, err)
	}
	if rest.largest <= 32<<10 { // io.Copy's own buffer
		t.Errorf("largest write %d bytes: not whole chunks", rest.largest)
	}
	if got := append(head, rest.buf.Bytes()...); !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes, want %d equal", len(got), len(data))
	}
	if _, err := r.Read(head); err != io.EOF {
		t.Errorf("read after the end: %v", err)
	}
}

// onlyWriter is a writer with no ReadFrom, so that io.Copy must use the
// source's WriteTo (or a buffer).
type onlyWriter struct {
	buf     bytes.Buffer
	largest int
}

func (w *onlyWriter) Write(p []byte) (int, error) {
	w.largest = max(w.largest, len(p))
	return w.buf.Write(p)
}

// TestObjectReadClosed: a read after Close fails; a read of an empty object
// is io.EOF at once.
func TestObjectReadClosed(t *testing.T) {
	ctx, objs := modelObjects(t)
	if _, err := objs.Put(ctx, "empty", bytes.NewReader(nil)); err != nil {
		t.Fatal(err)
	}
	if _, err := objs.Put(ctx, "full", bytes.NewReader(make([]byte, 1<<20))); err != nil {
		t.Fatal(err)
	}
	r, err := objs.Get(ctx, "empty")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := io.ReadAll(r); err != nil || len(got) != 0 {
		t.Errorf("empty object: %d bytes, %v", len(got), err)
	}
	r, err = objs.Get(ctx, "full")
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Read(make([]byte, 10)); err == nil {
		t.Error("read after close: no error")
	}
}
