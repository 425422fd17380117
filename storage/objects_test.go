package storage_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/storage"
	"github.com/largeforge/largeforge/storage/storagetest"
)

// newObjects returns an Objects store in buckets of its own on bus.
func newObjects(t *testing.T, bus *pipeline.Bus) *storage.Objects {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n := fmt.Sprintf("t%d", bucketSeq.Add(1))
	if _, err := bus.JetStream().CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "art_" + n}); err != nil {
		t.Fatal(err)
	}
	if _, err := bus.JetStream().CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "claims_" + n}); err != nil {
		t.Fatal(err)
	}
	obj, err := bus.Objects(ctx, "art_"+n)
	if err != nil {
		t.Fatal(err)
	}
	claims, err := bus.KV(ctx, "claims_"+n)
	if err != nil {
		t.Fatal(err)
	}
	s, err := storage.NewObjects(obj, claims, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var bucketSeq atomic.Int64

func TestStoreConformance(t *testing.T) {
	_, bus := pipelinetest.StartBus(t)
	stores := []struct {
		name string
		new  func(t *testing.T) storage.Store
	}{
		{"Local", func(t *testing.T) storage.Store { l, _ := newLocal(t); return l }},
		{"Objects", func(t *testing.T) storage.Store { return newObjects(t, bus) }},
		{"Mirror", func(t *testing.T) storage.Store {
			l, _ := newLocal(t)
			m, err := storage.NewMirror(newObjects(t, bus), l)
			if err != nil {
				t.Fatal(err)
			}
			return m
		}},
	}
	for _, s := range stores {
		t.Run(s.name, func(t *testing.T) { storagetest.Conformance(t, s.new) })
	}
}

// TestObjectsNeverYieldsDamagedObject: a chunk upload that never got its
// metadata (a writer killed mid-put) is no object and no part; an object
// whose bytes are not those of its recorded digest fails to open with
// ErrDigestMismatch and leaves no file behind; a claim whose upload never
// finished is a gap the next part skips.
func TestObjectsNeverYieldsDamagedObject(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, bus := pipelinetest.StartBus(t)
	s, err := storage.OpenObjects(ctx, bus, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	js := bus.JetStream()

	// A partial upload: chunks without metadata.
	if _, err := js.Publish(ctx, "$O."+pipeline.BucketArtifacts+".C.partialupload1", []byte("PAR1 half a part")); err != nil {
		t.Fatal(err)
	}
	// A claimed number whose upload never finished.
	claims, _ := bus.KV(ctx, pipeline.BucketClaims)
	if _, err := claims.Create(ctx, "datasets/d/part-00000.parquet", []byte("died")); err != nil {
		t.Fatal(err)
	}
	parts, _ := storage.DatasetParts(s, "d")
	info, err := parts.Publish(ctx, func(w io.Writer) error { _, err := io.WriteString(w, "good"); return err })
	if err != nil {
		t.Fatal(err)
	}
	if info.Key != "datasets/d/part-00001.parquet" {
		t.Errorf("published %s past the dead claim, want part-00001", info.Key)
	}
	list, err := parts.List(ctx)
	if err != nil || len(list) != 1 || list[0].Key != info.Key {
		t.Errorf("parts = %v, %v; want only %s", list, err, info.Key)
	}

	// A forged object: its metadata names a digest its chunks do not have.
	if _, err := s.Put(ctx, "datasets/d/forged.bin", func(w io.Writer) error { _, err := io.WriteString(w, "honest bytes"); return err }); err != nil {
		t.Fatal(err)
	}
	tamperDigest(ctx, t, js, pipeline.BucketArtifacts, "datasets/d/forged.bin")
	tmp := t.TempDir()
	s2, _ := storage.OpenObjects(ctx, bus, tmp)
	if _, _, err := s2.Open(ctx, "datasets/d/forged.bin"); !errors.Is(err, pipeline.ErrDigestMismatch) {
		t.Errorf("Open of a forged object = %v, want ErrDigestMismatch", err)
	}
	if left, _ := filepathGlob(tmp); len(left) != 0 {
		t.Errorf("a failed Open left %v", left)
	}
	if _, err := s.Path("datasets/d/part-00001.parquet"); !errors.Is(err, storage.ErrNoPath) {
		t.Errorf("Objects.Path = %v, want ErrNoPath", err)
	}
}

// tamperDigest rewrites the metadata of an object with another digest.
func tamperDigest(ctx context.Context, t *testing.T, js jetstream.JetStream, bucket, name string) {
	t.Helper()
	os, err := js.ObjectStore(ctx, bucket)
	if err != nil {
		t.Fatal(err)
	}
	info, err := os.GetInfo(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	info.Digest = "SHA-256=" + base64.URLEncoding.EncodeToString(make([]byte, 32))
	data, err := json.Marshal(info)
	if err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg("$O." + bucket + ".M." + base64.URLEncoding.EncodeToString([]byte(name)))
	m.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	m.Data = data
	if _, err := js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
}

func filepathGlob(dir string) ([]string, error) { return filepath.Glob(filepath.Join(dir, "*")) }
