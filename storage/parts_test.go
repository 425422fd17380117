package storage_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/storage"
	"github.com/largeforge/largeforge/storage/storagetest"
)

func TestPartNumber(t *testing.T) {
	tests := []struct {
		key    string
		want   int
		wantOK bool
	}{
		{"datasets/d/part-00007.parquet", 7, true},
		{"part-123456.parquet", 123456, true},
		{"part-.parquet", 0, false},
		{"part-00001.jsonl", 0, false},
		{"rejects.jsonl", 0, false},
		{"part-x1.parquet", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			n, ok := storage.PartNumber(tt.key)
			if n != tt.want || ok != tt.wantOK {
				t.Fatalf("PartNumber(%q) = %d, %v", tt.key, n, ok)
			}
		})
	}
}

// TestPartsContinue: a new writer numbers its parts after those stored.
func TestPartsContinue(t *testing.T) {
	ctx := context.Background()
	l, _ := newLocal(t)
	if _, err := l.Put(ctx, "datasets/d/part-00004.parquet", writeString("old")); err != nil {
		t.Fatal(err)
	}
	p, err := storage.DatasetParts(l, "d")
	if err != nil {
		t.Fatal(err)
	}
	info, err := p.Publish(ctx, writeString("new"))
	if err != nil {
		t.Fatal(err)
	}
	if info.Key != "datasets/d/part-00005.parquet" {
		t.Errorf("published %s", info.Key)
	}
	if from, err := p.ListFrom(ctx, 5); err != nil || len(from) != 1 || from[0].Key != info.Key {
		t.Errorf("ListFrom(5) = %v, %v; want the new part alone", from, err)
	}
	if _, err := storage.DatasetParts(l, "../x"); !errors.Is(err, storage.ErrInvalidKey) {
		t.Errorf("bad name: err = %v", err)
	}
}

// TestConcurrentPartsWriters: two parts writers on one dataset (and on one
// job), each with its own Parts and both with one Deduper, publish at once
// batches of ids that overlap. Every part gets a name of its own and every
// id is in exactly one part.
func TestConcurrentPartsWriters(t *testing.T) {
	for _, tt := range []struct {
		name  string
		parts func(storage.Store) (*storage.Parts, error)
	}{
		{"dataset", func(s storage.Store) (*storage.Parts, error) { return storage.DatasetParts(s, "shared") }},
		{"job", func(s storage.Store) (*storage.Parts, error) { return storage.JobParts(s, "batch_shared") }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			l, _ := newLocal(t)
			dedupe := storage.NewMemory()
			const writers, batches, batchSize, ids = 2, 40, 8, 200
			var wg sync.WaitGroup
			errs := make(chan error, writers)
			for w := range writers {
				parts, err := tt.parts(l)
				if err != nil {
					t.Fatal(err)
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					for b := range batches {
						// The writers walk the ids in opposite directions
						// with a stride, so their batches overlap.
						batch := make([]string, batchSize)
						for i := range batch {
							k := (b*batchSize + i) * 7 % ids
							if w == 1 {
								k = ids - 1 - k
							}
							batch[i] = fmt.Sprintf("id-%03d", k)
						}
						if err := writeBatch(ctx, parts, dedupe, batch); err != nil {
							errs <- err
							return
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			parts, _ := tt.parts(l)
			got, _, err := storagetest.IDsOnce(ctx, parts, func(key string) ([]string, error) {
				return strings.Fields(readAll(t, l, key)), nil
			})
			if err != nil || got != ids {
				t.Errorf("%d of %d ids stored once: %v", got, ids, err)
			}
		})
	}
}

// writeBatch is what a sink does with a batch: claim, publish the new ids
// as one part, release the claim when the part is not published.
func writeBatch(ctx context.Context, parts *storage.Parts, d storage.Deduper, batch []string) error {
	fresh, err := d.Claim(ctx, batch)
	if err != nil {
		return err
	}
	var ids []string
	for i, id := range batch {
		if fresh[i] {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	if _, err := parts.Publish(ctx, writeString(strings.Join(ids, "\n"))); err != nil {
		return errors.Join(err, d.Release(ctx, ids))
	}
	return nil
}

// TestPartsRewriteAfterCollision: a write that lost its number to another
// writer runs again for the next one.
func TestPartsRewriteAfterCollision(t *testing.T) {
	ctx := context.Background()
	l, _ := newLocal(t)
	a, _ := storage.JobParts(l, "j")
	b, _ := storage.JobParts(l, "j")
	if _, err := a.Publish(ctx, writeString("a0")); err != nil {
		t.Fatal(err)
	}
	// b numbers after part 0; a, which listed before, tries 1 next.
	if _, err := b.Publish(ctx, writeString("b1")); err != nil {
		t.Fatal(err)
	}
	calls := 0
	info, err := a.Publish(ctx, func(w io.Writer) error { calls++; return writeString("a2")(w) })
	if err != nil {
		t.Fatal(err)
	}
	if info.Key != "jobs/j/parts/part-000002.parquet" || calls != 2 || readAll(t, l, "jobs/j/parts/part-000001.parquet") != "b1" {
		t.Errorf("published %s after %d writes", info.Key, calls)
	}
}

// A job's parts in an object store are listed by their numbers: past a
// claimed number whose upload failed (a gap), up to the first number no
// writer claimed, across more than one window of numbers, never reading
// the other objects of the bucket. An object under the job's prefix that
// no Publish numbered (past the first number nobody claimed) is no part.
func TestJobPartsListedByNumber(t *testing.T) {
	ctx := context.Background()
	_, bus := pipelinetest.StartBus(t)
	s := newObjects(t, bus)
	p, err := storage.JobParts(s, "j1")
	if err != nil {
		t.Fatal(err)
	}
	publish := func(body string) {
		t.Helper()
		if _, err := p.Publish(ctx, writeString(body)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		publish(fmt.Sprint("part ", i))
	}
	// Number 3 claimed, its upload failed: a gap.
	if _, err := p.Publish(ctx, func(io.Writer) error { return errors.New("disk gone") }); err == nil {
		t.Fatal("a failed write published a part")
	}
	for i := 4; i < 40; i++ {
		publish(fmt.Sprint("part ", i))
	}
	// Another job's parts and an object no Publish numbered.
	other, err := storage.JobParts(s, "j2")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Publish(ctx, writeString("other")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, p.Key(45), writeString("stray")); err != nil {
		t.Fatal(err)
	}
	listings := bucketListings(t, bus)
	list, err := p.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := listings(); n != 0 {
		t.Errorf("listing the job's parts created %d consumers on the object store's stream", n)
	}
	var got []int
	for _, in := range list {
		n, _ := storage.PartNumber(in.Key)
		got = append(got, n)
		if want := int64(len(fmt.Sprint("part ", n))); in.Size != want {
			t.Errorf("%s: size %d, want %d", in.Key, in.Size, want)
		}
	}
	var want []int
	for i := range 40 {
		if i != 3 {
			want = append(want, i)
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("parts %v, want %v", got, want)
	}
	// From a number on: the parts from there (past the gap).
	for _, first := range []int{2, 3, 38, 40} {
		from, err := p.ListFrom(ctx, first)
		if err != nil {
			t.Fatal(err)
		}
		got := partNumbers(from)
		if wantFrom := slices.DeleteFunc(slices.Clone(want), func(n int) bool { return n < first }); !slices.Equal(got, wantFrom) {
			t.Errorf("ListFrom(%d) = %v, want %v", first, got, wantFrom)
		}
	}
	for n, want := range map[int]bool{0: true, 3: false, 39: true, 40: false} {
		if ok, err := p.Exists(ctx, n); err != nil || ok != want {
			t.Errorf("Exists(%d) = %v, %v; want %v", n, ok, err, want)
		}
	}
	// An object put without a claim is never replaced by a Create, and a
	// job's parts take no number out of turn.
	if _, err := s.Create(ctx, p.Key(45), writeString("over")); !errors.Is(err, storage.ErrExists) {
		t.Errorf("create over an unclaimed object: %v, want ErrExists", err)
	}
	if _, err := p.Create(ctx, 41, writeString("out of turn")); !errors.Is(err, storage.ErrInvalidOption) {
		t.Errorf("job part created out of turn: %v", err)
	}
	// The next part goes after the last one.
	info, err := p.Publish(ctx, writeString("next"))
	if err != nil || info.Key != p.Key(40) {
		t.Errorf("next part %s, %v; want %s", info.Key, err, p.Key(40))
	}
}

// A dataset's rejects (numbered by Publish only) are listed by their
// numbers, past a claimed number whose upload failed, without a consumer on
// lf_artifacts' stream (a listing of every object); the dataset's parts
// and other objects are no rejects.
func TestRejectsListedByNumber(t *testing.T) {
	ctx := context.Background()
	_, bus := pipelinetest.StartBus(t)
	s := newObjects(t, bus)
	rejects, err := storage.DatasetRejectParts(s, "ds")
	if err != nil {
		t.Fatal(err)
	}
	parts, _ := storage.DatasetParts(s, "ds")
	if _, err := parts.Publish(ctx, writeString("a part")); err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		write := writeString(fmt.Sprint("rejects ", i))
		if i == 1 {
			write = func(io.Writer) error { return errors.New("disk gone") }
		}
		if _, err := rejects.Publish(ctx, write); (err != nil) != (i == 1) {
			t.Fatalf("publish rejects %d: %v", i, err)
		}
	}
	listings := bucketListings(t, bus)
	list, err := rejects.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := partNumbers(list); fmt.Sprint(got) != "[0 2 3]" {
		t.Errorf("rejects %v, want [0 2 3]", got)
	}
	for _, in := range list {
		if !strings.HasPrefix(path.Base(in.Key), "rejects-") {
			t.Errorf("%s listed as rejects", in.Key)
		}
	}
	if n := listings(); n != 0 {
		t.Errorf("listing the rejects created %d consumers on the object store's stream", n)
	}
}

// bucketListings counts the consumers created on an object store's stream
// from now on, each a listing of every object in the bucket (Objects.List);
// the function it returns gives the count so far.
func bucketListings(t *testing.T, bus *pipeline.Bus) func() int64 {
	t.Helper()
	var n atomic.Int64
	sub, err := bus.Conn().Subscribe("$JS.API.CONSUMER.CREATE.>", func(m *nats.Msg) {
		if strings.HasPrefix(strings.Split(m.Subject, ".")[4], "OBJ_") {
			n.Add(1)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := bus.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	return func() int64 {
		if err := bus.Conn().Flush(); err != nil {
			t.Fatal(err)
		}
		return n.Load()
	}
}
