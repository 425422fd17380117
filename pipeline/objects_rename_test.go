package pipeline_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"testing"

	"github.com/largeforge/largeforge/pipeline"
)

// TestObjectRename: a renamed object reads back byte-equal under its new
// name, with its metadata, replacing what was there; the old name is gone
// (Get, Info, List) and can be put again; deleting the new name leaves the
// re-put old one whole; renaming a missing object is ErrObjectNotFound.
func TestObjectRename(t *testing.T) {
	ctx, objs := modelObjects(t)
	data := make([]byte, 1<<20+5) // several chunks
	_, _ = rand.Read(data)
	put, err := objs.PutWithMetadata(ctx, "m/.push-1/weights", map[string]string{"mtime": "7"}, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := objs.Put(ctx, "m/v1/weights", bytes.NewReader([]byte("replaced"))); err != nil {
		t.Fatal(err)
	}
	info, err := objs.Rename(ctx, "m/.push-1/weights", "m/v1/weights")
	if err != nil {
		t.Fatal(err)
	}
	if info.Name != "m/v1/weights" || info.Size != put.Size || info.Digest != put.Digest {
		t.Fatalf("renamed info %+v, put %+v", info, put)
	}
	readBack := func(name string, want []byte) {
		t.Helper()
		r, err := objs.Get(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		got, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s read back %d bytes (err %v), want %d equal", name, len(got), err, len(want))
		}
	}
	readBack("m/v1/weights", data)
	if got, err := objs.Info(ctx, "m/v1/weights"); err != nil || got.Metadata["mtime"] != "7" {
		t.Fatalf("renamed object's metadata %v (err %v)", got.Metadata, err)
	}
	if _, err := objs.Info(ctx, "m/.push-1/weights"); !errors.Is(err, pipeline.ErrObjectNotFound) {
		t.Fatalf("old name after rename: %v, want ErrObjectNotFound", err)
	}
	ls, err := objs.List(ctx)
	if err != nil || len(ls) != 1 || ls[0].Name != "m/v1/weights" {
		t.Fatalf("List after rename = %+v, %v", ls, err)
	}
	if _, err := objs.Put(ctx, "m/.push-1/weights", bytes.NewReader([]byte("again"))); err != nil {
		t.Fatal(err)
	}
	if err := objs.Delete(ctx, "m/v1/weights"); err != nil {
		t.Fatal(err)
	}
	readBack("m/.push-1/weights", []byte("again"))
	if _, err := objs.Rename(ctx, "absent", "m/x"); !errors.Is(err, pipeline.ErrObjectNotFound) {
		t.Fatalf("rename absent: %v, want ErrObjectNotFound", err)
	}
}
