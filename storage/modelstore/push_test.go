package modelstore

import (
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

// pushFixture is a store on a fresh bus and a directory of a 4 MiB weights
// file (32 chunks) and a config.
type pushFixture struct {
	ctx  context.Context
	bus  *pipeline.Bus
	s    *Store
	dir  string
	big  localFile
	seen uint64 // the stream's last sequence at the last published call
}

func newPushFixture(t *testing.T) *pushFixture {
	t.Helper()
	_, bus := pipelinetest.StartBus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	s, err := New(ctx, bus)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	weights := make([]byte, 4<<20)
	_, _ = rand.Read(weights)
	for name, data := range map[string][]byte{"model.safetensors": weights, "config.json": []byte(`{"v":1}`)} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	files, err := listFiles(dir)
	if err != nil || len(files) != 2 || files[1].Path != "model.safetensors" {
		t.Fatalf("listFiles = %+v, %v", files, err)
	}
	return &pushFixture{ctx: ctx, bus: bus, s: s, dir: dir, big: files[1]}
}

// published is how many messages lf_models' stream took since the last
// call: the chunks and meta messages a push wrote.
func (p *pushFixture) published(t *testing.T) uint64 {
	t.Helper()
	st, err := p.bus.JetStream().Stream(p.ctx, "OBJ_"+pipeline.BucketModels)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(p.ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := info.State.LastSeq - p.seen
	p.seen = info.State.LastSeq
	return n
}

// push pushes the fixture's directory and checks that it made want
// (unless want is ""), that nothing is left staged, and that a pull gives
// the files back.
func (p *pushFixture) push(t *testing.T, want string) Manifest {
	t.Helper()
	m, err := p.s.Push(p.ctx, "m", p.dir)
	if err != nil {
		t.Fatal(err)
	}
	if want != "" && m.Digest != want {
		t.Fatalf("pushed version %s, want %s", m.Digest, want)
	}
	infos, err := p.s.objs.List(p.ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range infos {
		if strings.Contains(in.Name, stagePrefix) {
			t.Fatalf("staged object %s left after a push", in.Name)
		}
	}
	if _, err := p.s.FetchVersion(p.ctx, "m", m.Digest, t.TempDir()); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestPushSkipsStoredFiles: a first push uploads each file once; the same files
// pushed again upload nothing (their sizes and modification times match
// the stored version, and their SHA-256s confirm it); touched files
// (same bytes, new times) make the same version; a pulled directory,
// which gets the pushed modification times back, pushes as the same
// version uploading nothing.
func TestPushSkipsStoredFiles(t *testing.T) {
	p := newPushFixture(t)
	chunks := uint64(p.big.Size / (128 << 10))
	p.published(t)
	m := p.push(t, "")
	if n := p.published(t); n < chunks || n > chunks+20 {
		t.Fatalf("first push wrote %d messages, want the weights' %d chunks and a few meta messages (one upload)", n, chunks)
	}
	p.push(t, m.Digest)
	if n := p.published(t); n > 4 {
		t.Fatalf("pushing the same files again wrote %d messages, want only the pointer's", n)
	}
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(filepath.Join(p.dir, "config.json"), later, later); err != nil {
		t.Fatal(err)
	}
	p.push(t, m.Digest)
	pulled := filepath.Join(t.TempDir(), "pulled")
	if _, err := p.s.Pull(p.ctx, "m", pulled); err != nil {
		t.Fatal(err)
	}
	p.dir = pulled
	p.published(t)
	p.push(t, m.Digest)
	if n := p.published(t); n > 4 {
		t.Fatalf("pushing a pulled directory wrote %d messages, want only the pointer's", n)
	}
}

// TestPushResumes: a file an interrupted push staged is renamed into the
// version by the next push of the same files, not uploaded again; one
// that no longer matches the file (rewritten since) is not used.
func TestPushResumes(t *testing.T) {
	p := newPushFixture(t)
	chunks := uint64(p.big.Size / (128 << 10))
	stage, err := stageOf("m")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.s.stageFile(p.ctx, "m", stage, &p.big, nil); err != nil { // what an interrupted push leaves
		t.Fatal(err)
	}
	p.published(t)
	m := p.push(t, "")
	if n := p.published(t); n >= chunks {
		t.Fatalf("the resumed push wrote %d messages: the staged weights (%d chunks) were uploaded again", n, chunks)
	}
	if _, _, err := p.s.Remove(p.ctx, "m"); err != nil {
		t.Fatal(err)
	}

	big := p.big
	big.SHA256 = ""
	if _, err := p.s.stageFile(p.ctx, "m", stage, &big, nil); err != nil {
		t.Fatal(err)
	}
	other := make([]byte, big.Size) // same size, restored time: only the SHA-256 tells
	_, _ = rand.Read(other)
	st, _ := os.Stat(big.abs)
	if err := os.WriteFile(big.abs, other, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(big.abs, st.ModTime(), st.ModTime()); err != nil {
		t.Fatal(err)
	}
	p.published(t)
	got, err := p.s.Push(p.ctx, "m", p.dir)
	if err != nil || got.Digest == m.Digest {
		t.Fatalf("push of a rewritten file: %s, %v; want a version other than the staged file's", got.Digest, err)
	}
	if n := p.published(t); n < chunks {
		t.Fatalf("push wrote %d messages: the stale staged weights were used", n)
	}
	if _, err := p.s.FetchVersion(p.ctx, "m", got.Digest, t.TempDir()); err != nil {
		t.Fatal(err)
	}
	// The stale object stays staged (it may be another push's) until the
	// name goes.
	if _, _, err := p.s.Remove(p.ctx, "m"); err != nil {
		t.Fatal(err)
	}
	if left, err := p.s.objs.List(p.ctx); err != nil || len(left) != 0 {
		t.Fatalf("objects left after the name went: %+v, %v", left, err)
	}
}

// TestPushFileRewritten: a file rewritten after the push listed it (its
// modification time moved) is refused with ErrChanged, and nothing of it
// stays staged.
func TestPushFileRewritten(t *testing.T) {
	p := newPushFixture(t)
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(p.big.abs, later, later); err != nil {
		t.Fatal(err)
	}
	stage, err := stageOf("m")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.s.stageFile(p.ctx, "m", stage, &p.big, nil); !errors.Is(err, ErrChanged) {
		t.Fatalf("staging a rewritten file: %v, want ErrChanged", err)
	}
	if left, err := p.s.objs.List(p.ctx); err != nil || len(left) != 0 {
		t.Fatalf("objects left: %+v, %v", left, err)
	}
}
