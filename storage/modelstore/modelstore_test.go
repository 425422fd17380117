package modelstore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/largeforge/largeforge/internal/testenv"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/storage/modelstore"
)

func newStore(t *testing.T) (*modelstore.Store, *pipeline.Bus, context.Context) {
	t.Helper()
	_, bus := pipelinetest.StartBus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	s, err := modelstore.New(ctx, bus)
	if err != nil {
		t.Fatal(err)
	}
	return s, bus, ctx
}

// storiesDir is a copy of the stories260K checkpoint with a file in a
// subdirectory and a hidden file (which Push skips).
func storiesDir(t *testing.T) string {
	t.Helper()
	src := filepath.Dir(testenv.SharedFile(t, "models/stories260K/model.safetensors"))
	dir := t.TempDir()
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, e.Name()), data)
	}
	writeFile(t, filepath.Join(dir, "adapter", "adapter_config.json"), []byte(`{"r":8}`))
	writeFile(t, filepath.Join(dir, ".lock"), []byte("x"))
	return dir
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// sameFiles fails unless got holds exactly the files of want (hidden ones
// left out), byte for byte.
func sameFiles(t *testing.T, want, got string) {
	t.Helper()
	seen := 0
	err := filepath.WalkDir(want, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name()[0] == '.' {
			return err
		}
		rel, _ := filepath.Rel(want, p)
		a, _ := os.ReadFile(p)
		b, err := os.ReadFile(filepath.Join(got, rel))
		if err != nil || !bytes.Equal(a, b) {
			return fmt.Errorf("%s differs (%d vs %d bytes): %v", rel, len(a), len(b), err)
		}
		seen++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	_ = filepath.WalkDir(got, func(_ string, d os.DirEntry, _ error) error {
		if !d.IsDir() {
			n++
		}
		return nil
	})
	if n != seen {
		t.Fatalf("%s holds %d files, want %d", got, n, seen)
	}
}

func TestPushPullRoundTrip(t *testing.T) {
	s, _, ctx := newStore(t)
	src := storiesDir(t)
	m, err := s.Push(ctx, "stories", src)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Files) != 7 || len(m.Digest) != 64 {
		t.Fatalf("manifest %d files digest %q, want 7 files (hidden skipped, subdirectory kept)", len(m.Files), m.Digest)
	}
	dst := filepath.Join(t.TempDir(), "pulled")
	digest, err := s.Pull(ctx, "stories", dst)
	if err != nil {
		t.Fatal(err)
	}
	if digest != m.Digest {
		t.Fatalf("pulled digest %s, pushed %s", digest, m.Digest)
	}
	if _, err := os.Stat(filepath.Join(src, ".lock")); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(src, ".lock"))
	sameFiles(t, src, dst)
	if got, err := s.Resolve(ctx, "stories"); err != nil || got != m.Digest {
		t.Fatalf("Resolve = %s, %v; want %s", got, err, m.Digest)
	}
	if _, err := s.Pull(ctx, "stories", dst); !errors.Is(err, modelstore.ErrDestination) {
		t.Fatalf("pull into a non-empty directory: %v, want ErrDestination", err)
	}
	ls, err := s.List(ctx)
	if err != nil || len(ls) != 1 || ls[0].Name != "stories" || ls[0].Digest != m.Digest || ls[0].Size != m.Size {
		t.Fatalf("List = %+v, %v", ls, err)
	}
}

func TestVersionsAndRemove(t *testing.T) {
	s, bus, ctx := newStore(t)
	v1dir, v2dir := t.TempDir(), t.TempDir()
	writeFile(t, filepath.Join(v1dir, "config.json"), []byte(`{"v":1}`))
	writeFile(t, filepath.Join(v2dir, "config.json"), []byte(`{"v":2}`))
	v1, err := s.Push(ctx, "m", v1dir)
	if err != nil {
		t.Fatal(err)
	}
	v2, err := s.Push(ctx, "m", v2dir)
	if err != nil {
		t.Fatal(err)
	}
	if v1.Digest == v2.Digest {
		t.Fatal("two contents, one digest")
	}
	vs, err := s.Versions(ctx, "m")
	if err != nil || len(vs) != 2 || vs[0].Digest != v1.Digest || vs[1].Digest != v2.Digest || vs[0].Current || !vs[1].Current {
		t.Fatalf("Versions = %+v, %v; want v1, v2 (current)", vs, err)
	}
	again, err := s.Push(ctx, "m", v1dir) // same files: same version, current again
	if err != nil || again.Digest != v1.Digest {
		t.Fatalf("push of v1 again: %s, %v", again.Digest, err)
	}
	if vs, _ := s.Versions(ctx, "m"); len(vs) != 2 || !vs[0].Current {
		t.Fatalf("after pushing v1 again: %+v", vs)
	}
	removed, current, err := s.Remove(ctx, "m")
	if err != nil || removed != v1.Digest || current != v2.Digest {
		t.Fatalf("Remove = %s, %s, %v; want v1 removed, v2 current", removed, current, err)
	}
	if d, _ := s.Resolve(ctx, "m"); d != v2.Digest {
		t.Fatalf("after rm: current %s, want v2", d)
	}
	if _, _, err := s.Remove(ctx, "m"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Resolve(ctx, "m"); !errors.Is(err, modelstore.ErrNotFound) {
		t.Fatalf("after removing the last version: %v, want ErrNotFound", err)
	}
	objs, _ := bus.Objects(ctx, pipeline.BucketModels)
	if left, _ := objs.List(ctx); len(left) != 0 {
		t.Fatalf("objects left after the name went: %+v", left)
	}
}

func TestPullUnknownName(t *testing.T) {
	s, _, ctx := newStore(t)
	dst := filepath.Join(t.TempDir(), "m")
	if _, err := s.Pull(ctx, "nope", dst); !errors.Is(err, modelstore.ErrNotFound) {
		t.Fatalf("pull of an unknown name: %v, want ErrNotFound", err)
	}
	if _, _, err := s.Fetch(ctx, "nope", t.TempDir()); !errors.Is(err, modelstore.ErrNotFound) {
		t.Fatalf("fetch of an unknown name: %v, want ErrNotFound", err)
	}
	for _, bad := range []string{"", "a.b", "a/b", "a b"} {
		if _, err := s.Push(ctx, bad, dst); !errors.Is(err, modelstore.ErrInvalidName) {
			t.Errorf("push %q: %v, want ErrInvalidName", bad, err)
		}
	}
	assertNoModel(t, dst)
}

// assertNoModel fails when dir, or anything beside it, exists.
func assertNoModel(t *testing.T, dir string) {
	t.Helper()
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s exists after a refused pull: %v", dir, err)
	}
	if left, _ := os.ReadDir(filepath.Dir(dir)); len(left) != 0 {
		t.Fatalf("left beside %s: %v", dir, left)
	}
}

// A stored object that does not match the manifest (overwritten with other
// bytes or fewer, chunks lost inside the stream, a manifest or file object
// gone) is refused, and no model directory appears.
func TestPullRefusesDamagedObjects(t *testing.T) {
	const weights = "model.safetensors"
	tests := []struct {
		name    string
		damage  func(t *testing.T, ctx context.Context, bus *pipeline.Bus, m modelstore.Manifest, key string)
		wantErr error
	}{
		{"tampered", func(t *testing.T, ctx context.Context, bus *pipeline.Bus, m modelstore.Manifest, key string) {
			objs, _ := bus.Objects(ctx, pipeline.BucketModels)
			other := bytes.Repeat([]byte{7}, int(sizeOf(m, weights)))
			if _, err := objs.Put(ctx, key, bytes.NewReader(other)); err != nil {
				t.Fatal(err)
			}
		}, modelstore.ErrCorrupt},
		{"truncated object", func(t *testing.T, ctx context.Context, bus *pipeline.Bus, m modelstore.Manifest, key string) {
			objs, _ := bus.Objects(ctx, pipeline.BucketModels)
			r, err := objs.Get(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			head := make([]byte, 1000)
			if _, err := r.Read(head); err != nil {
				t.Fatal(err)
			}
			r.Close()
			if _, err := objs.Put(ctx, key, bytes.NewReader(head)); err != nil {
				t.Fatal(err)
			}
		}, modelstore.ErrCorrupt},
		{"chunks lost", func(t *testing.T, ctx context.Context, bus *pipeline.Bus, m modelstore.Manifest, key string) {
			// The object's record still says its full size and digest,
			// but all chunks except the last are gone from the stream.
			os, err := bus.JetStream().ObjectStore(ctx, pipeline.BucketModels)
			if err != nil {
				t.Fatal(err)
			}
			info, err := os.GetInfo(ctx, key)
			if err != nil || info.Chunks < 2 {
				t.Fatalf("object %s: %+v, %v; want several chunks", key, info, err)
			}
			stream, err := bus.JetStream().Stream(ctx, "OBJ_"+pipeline.BucketModels)
			if err != nil {
				t.Fatal(err)
			}
			subj := fmt.Sprintf("$O.%s.C.%s", pipeline.BucketModels, info.NUID)
			if err := stream.Purge(ctx, jetstream.WithPurgeSubject(subj), jetstream.WithPurgeKeep(1)); err != nil {
				t.Fatal(err)
			}
		}, modelstore.ErrCorrupt},
		{"file object missing", func(t *testing.T, ctx context.Context, bus *pipeline.Bus, m modelstore.Manifest, key string) {
			objs, _ := bus.Objects(ctx, pipeline.BucketModels)
			if err := objs.Delete(ctx, key); err != nil {
				t.Fatal(err)
			}
		}, modelstore.ErrCorrupt},
		{"manifest missing", func(t *testing.T, ctx context.Context, bus *pipeline.Bus, m modelstore.Manifest, key string) {
			objs, _ := bus.Objects(ctx, pipeline.BucketModels)
			if err := objs.Delete(ctx, "stories/"+m.Digest+".json"); err != nil {
				t.Fatal(err)
			}
		}, modelstore.ErrNoManifest},
		{"manifest forged", func(t *testing.T, ctx context.Context, bus *pipeline.Bus, m modelstore.Manifest, key string) {
			objs, _ := bus.Objects(ctx, pipeline.BucketModels)
			forged := fmt.Sprintf(`{"name":"stories","digest":%q,"files":[{"path":"config.json","size":1,"sha256":"00"}]}`, m.Digest)
			if _, err := objs.Put(ctx, "stories/"+m.Digest+".json", bytes.NewReader([]byte(forged))); err != nil {
				t.Fatal(err)
			}
		}, modelstore.ErrCorrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, bus, ctx := newStore(t)
			m, err := s.Push(ctx, "stories", storiesDir(t))
			if err != nil {
				t.Fatal(err)
			}
			tt.damage(t, ctx, bus, m, "stories/"+m.Digest+"/"+weights)
			dst := filepath.Join(t.TempDir(), "pulled")
			if _, err := s.Pull(ctx, "stories", dst); !errors.Is(err, tt.wantErr) {
				t.Fatalf("pull: %v, want %v", err, tt.wantErr)
			}
			assertNoModel(t, dst)
			cache := t.TempDir()
			if _, _, err := s.Fetch(ctx, "stories", cache); !errors.Is(err, tt.wantErr) {
				t.Fatalf("fetch: %v, want %v", err, tt.wantErr)
			}
			assertNoModel(t, filepath.Join(cache, "stories", m.Digest))
		})
	}
}

func sizeOf(m modelstore.Manifest, path string) int64 {
	for _, f := range m.Files {
		if f.Path == path {
			return f.Size
		}
	}
	return 0
}

// A fetched version stays as it is under cache/<name>/<digest> when a new
// version is pushed; the next fetch brings the new one beside it.
func TestFetchKeepsLoadedVersion(t *testing.T) {
	s, _, ctx := newStore(t)
	v1dir, v2dir := t.TempDir(), t.TempDir()
	writeFile(t, filepath.Join(v1dir, "config.json"), []byte(`{"v":1}`))
	writeFile(t, filepath.Join(v2dir, "config.json"), []byte(`{"v":2}`))
	cache := t.TempDir()
	if _, err := s.Push(ctx, "m", v1dir); err != nil {
		t.Fatal(err)
	}
	dir1, d1, err := s.Fetch(ctx, "m", cache)
	if err != nil || dir1 != filepath.Join(cache, "m", d1) {
		t.Fatalf("fetch v1: %s %s %v", dir1, d1, err)
	}
	if _, err := s.Push(ctx, "m", v2dir); err != nil {
		t.Fatal(err)
	}
	sameFiles(t, v1dir, dir1)
	dir2, d2, err := s.Fetch(ctx, "m", cache)
	if err != nil || d2 == d1 || dir2 == dir1 {
		t.Fatalf("fetch after v2: %s %s %v", dir2, d2, err)
	}
	sameFiles(t, v2dir, dir2)
	sameFiles(t, v1dir, dir1)
}
