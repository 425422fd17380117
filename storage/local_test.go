package storage_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/largeforge/largeforge/storage"
	"github.com/largeforge/largeforge/storage/storagetest"
)

func newLocal(t *testing.T) (*storage.Local, string) {
	t.Helper()
	root := t.TempDir()
	l, err := storage.NewLocal(storage.DirsUnder(root))
	if err != nil {
		t.Fatal(err)
	}
	return l, root
}

func writeString(s string) func(io.Writer) error {
	return func(w io.Writer) error { _, err := io.WriteString(w, s); return err }
}

func readAll(t *testing.T, s storage.Store, key string) string {
	t.Helper()
	return storagetest.ReadString(t, s, key)
}

func TestNewLocal(t *testing.T) {
	if _, err := storage.NewLocal(storage.Dirs{}); !errors.Is(err, storage.ErrInvalidOption) {
		t.Fatalf("no directory: err = %v", err)
	}
}

func TestKeys(t *testing.T) {
	tests := []struct {
		name, got, want string
	}{
		{"manifest", storage.DatasetManifest("chat-v1"), "datasets/chat-v1/manifest.json"},
		{"rejects", storage.DatasetRejects("chat-v1"), "datasets/chat-v1/rejects.jsonl"},
		{"job file", storage.JobFile("batch_1", "output.jsonl"), "jobs/batch_1/output.jsonl"},
		{"model", storage.Model("tiny"), "models/tiny"},
		{"checkpoint", storage.Checkpoint("train_1", 20), "train/train_1/checkpoint-20"},
		{"dataset part", storage.DatasetPartName(3), "part-00003.parquet"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("got %q, want %q", tt.got, tt.want)
			}
		})
	}
}

func TestLocalPath(t *testing.T) {
	l, root := newLocal(t)
	tests := []struct {
		key     string
		want    string
		wantErr error
	}{
		{key: "jobs/j1/output.jsonl", want: filepath.Join(root, "jobs", "j1", "output.jsonl")},
		{key: "models/tiny", want: filepath.Join(root, "models", "tiny")},
		{key: "models/", want: filepath.Join(root, "models")},
		{key: "datasets/../etc/passwd", wantErr: storage.ErrInvalidKey},
		{key: "/datasets/x", wantErr: storage.ErrInvalidKey},
		{key: "datasets//x", wantErr: storage.ErrInvalidKey},
		{key: `datasets/a\b`, wantErr: storage.ErrInvalidKey},
		{key: "other/x", wantErr: storage.ErrInvalidKey},
		{key: "", wantErr: storage.ErrInvalidKey},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			got, err := l.Path(tt.key)
			if !errors.Is(err, tt.wantErr) || got != tt.want {
				t.Fatalf("Path(%q) = %q, %v; want %q, %v", tt.key, got, err, tt.want, tt.wantErr)
			}
		})
	}
	jobsOnly, err := storage.NewLocal(storage.Dirs{Jobs: root})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jobsOnly.Path("datasets/x"); !errors.Is(err, storage.ErrInvalidKey) {
		t.Errorf("a kind without a directory: err = %v", err)
	}
}

func TestLocalObjects(t *testing.T) {
	ctx := context.Background()
	l, _ := newLocal(t)
	key := "datasets/d/manifest.json"
	if _, _, err := l.Open(ctx, key); !errors.Is(err, storage.ErrNotFound) || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing object: err = %v", err)
	}
	info, err := l.Put(ctx, key, writeString("one"))
	if err != nil {
		t.Fatal(err)
	}
	// sha256("one")
	if info.Size != 3 || info.SHA256 != "7692c3ad3540bb803c020b3aee66cd8887123234ea0c6e7143c0add73ff431ed" {
		t.Errorf("info %+v", info)
	}
	if _, err := l.Put(ctx, key, writeString("two")); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, l, key); got != "two" {
		t.Errorf("after the second put: %q", got)
	}
	if _, err := l.Create(ctx, key, writeString("three")); !errors.Is(err, storage.ErrExists) {
		t.Errorf("create over an object: err = %v", err)
	}
	boom := errors.New("boom")
	if _, err := l.Put(ctx, key, func(io.Writer) error { return boom }); !errors.Is(err, boom) {
		t.Errorf("failing writer: err = %v", err)
	}
	if got := readAll(t, l, key); got != "two" {
		t.Errorf("after a failed put: %q", got)
	}
	for _, line := range []string{"a\n", "b\n"} {
		if err := l.Append(ctx, "datasets/d/rejects.jsonl", []byte(line)); err != nil {
			t.Fatal(err)
		}
	}
	if got := readAll(t, l, "datasets/d/rejects.jsonl"); got != "a\nb\n" {
		t.Errorf("appended %q", got)
	}
	if _, err := l.Create(ctx, "datasets/e/sub/x", writeString("x")); err != nil {
		t.Fatal(err)
	}
	list, err := l.List(ctx, "datasets/")
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, in := range list {
		keys = append(keys, in.Key)
	}
	want := []string{"datasets/d/manifest.json", "datasets/d/rejects.jsonl", "datasets/e/sub/x"}
	if !reflect.DeepEqual(keys, want) {
		t.Errorf("list: %q, want %q (no temporary files)", keys, want)
	}
	if list, err := l.List(ctx, "datasets/d/rej"); err != nil || len(list) != 1 || list[0].Size != 4 {
		t.Errorf("list by a name prefix: %+v, %v", list, err)
	}
	if list, err := l.List(ctx, "jobs/none/"); err != nil || len(list) != 0 {
		t.Errorf("list of a missing directory: %+v, %v", list, err)
	}
}
