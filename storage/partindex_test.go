package storage_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/storage"
)

// recordIDs are the record ids of from..to-1 (SHA-256, 64 hex digits).
func recordIDs(from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprintf("%x", sha256.Sum256([]byte(strconv.Itoa(i)))))
	}
	return out
}

func countNew(fresh []bool) (n int) {
	for _, f := range fresh {
		if f {
			n++
		}
	}
	return n
}

// TestSharedDeduper: writers (a PartIndex each, as on separate machines)
// of one dataset on one lf_dedupe bucket and one object store. Ids in a
// part another writer committed are duplicates; ids in a part in flight
// are waited for (ErrClaimPending when the wait runs out); ids of an
// abandoned claim are new again; a claim whose writer died before
// publishing its part is abandoned after the lease, and one whose writer
// died after publishing it is committed (its records are not stored
// twice), and the late writer's Commit is ErrAbandoned. Parts stored
// before the index keep their numbers; ids too many for one KV value are
// read back whole.
func TestSharedDeduper(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, kv, store := datasetBeforeIndex(ctx, t)
	parts, _ := storage.DatasetParts(store, "ds")
	open := func(o storage.PartIndexOptions) *storage.PartIndex {
		t.Helper()
		x, err := storage.NewPartIndex(kv, parts, "ds", o)
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	if _, err := storage.NewPartIndex(kv, parts, "bad name", storage.PartIndexOptions{}); !errors.Is(err, storage.ErrInvalidKey) {
		t.Errorf("NewPartIndex(bad name) = %v", err)
	}
	// publish stores claim c's part and commits it.
	publish := func(x *storage.PartIndex, c *storage.PartClaim) {
		t.Helper()
		if _, err := parts.Create(ctx, c.Number, write(c.Key)); err != nil {
			t.Fatal(err)
		}
		if err := x.Commit(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	short := storage.PartIndexOptions{Wait: 200 * time.Millisecond}
	a, b := open(short), open(short)

	// a claims 0..1000 (with a repeat) after the old parts, and commits.
	fa, ca, err := a.Claim(ctx, append(recordIDs(0, 1000), recordIDs(0, 1)...), []string{"shard-a"})
	if err != nil || countNew(fa) != 1000 || fa[1000] {
		t.Fatalf("a's first claim: %d new, %v", countNew(fa), err)
	}
	if ca.Number != 2 {
		t.Errorf("first claim is part %d, want 2 (after the parts stored before)", ca.Number)
	}
	publish(a, ca)
	// b overlaps half: the committed half are duplicates; a's shard is known.
	fb, cb, err := b.Claim(ctx, recordIDs(500, 1500), nil)
	if err != nil || countNew(fb) != 500 || fb[0] || !fb[500] || cb.Number != 3 {
		t.Fatalf("b's claim: %d new (want 500: 1000..1499) as part %v, %v", countNew(fb), cb, err)
	}
	if !b.HasShard("shard-a") {
		t.Error("b does not know a's shard")
	}
	// a claims ids b holds in flight: pending once the wait runs out.
	if _, _, err := a.Claim(ctx, recordIDs(1400, 1600), nil); !errors.Is(err, storage.ErrClaimPending) {
		t.Fatalf("claim of ids in flight = %v, want ErrClaimPending", err)
	}
	// b could not publish: abandoned, its ids are new again for a.
	if err := b.Abandon(ctx, cb); err != nil {
		t.Fatal(err)
	}
	f, c, err := a.Claim(ctx, recordIDs(1000, 1100), nil)
	if err != nil || countNew(f) != 100 {
		t.Fatalf("abandoned ids: %d new, %v", countNew(f), err)
	}
	// A part in flight that commits while the claim waits: duplicates.
	go func() {
		time.Sleep(50 * time.Millisecond) // a writer a little slower than b's claim
		publish(a, c)
	}()
	if f, c, err := open(storage.PartIndexOptions{}).Claim(ctx, recordIDs(1000, 1100), nil); err != nil || countNew(f) != 0 {
		t.Fatalf("ids of a part committed during the wait: %d new, %v", countNew(f), err)
	} else if err := b.Abandon(ctx, c); err != nil {
		t.Fatal(err)
	}

	// d dies after publishing its part, before committing it: after the
	// lease its ids are duplicates, not stored again.
	d := open(short)
	_, cd, err := d.Claim(ctx, recordIDs(2000, 2100), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parts.Create(ctx, cd.Number, write("d")); err != nil {
		t.Fatal(err)
	}
	// e dies before publishing its part: after the lease its ids are new.
	e := open(short)
	_, ce, err := e.Claim(ctx, recordIDs(3000, 3100), nil)
	if err != nil {
		t.Fatal(err)
	}
	late := open(storage.PartIndexOptions{Lease: time.Nanosecond})
	f, cl, err := late.Claim(ctx, append(recordIDs(2000, 2100), recordIDs(3000, 3100)...), nil)
	if err != nil || countNew(f) != 100 || f[0] || !f[100] {
		t.Fatalf("after the lease: %d new (want e's 100, not d's), %v", countNew(f), err)
	}
	publish(late, cl)
	if err := e.Commit(ctx, ce); !errors.Is(err, storage.ErrAbandoned) {
		t.Errorf("commit after the claim was given up = %v, want ErrAbandoned", err)
	}
	if err := d.Commit(ctx, cd); err != nil {
		t.Errorf("commit of a part committed for it = %v", err)
	}

	// More ids than one KV value holds.
	big := recordIDs(10_000, 110_000)
	if f, c, err := a.Claim(ctx, big, nil); err != nil || countNew(f) != len(big) {
		t.Fatalf("big claim: %d new, %v", countNew(f), err)
	} else {
		publish(a, c)
	}
	fresh := open(short)
	if f, c, err := fresh.Claim(ctx, recordIDs(109_990, 110_010), nil); err != nil || countNew(f) != 10 {
		t.Fatalf("after the big claim: %d new, want 10, %v", countNew(f), err)
	} else if fresh.Len() < len(big)+1000 {
		t.Errorf("a new index read %d ids, want at least %d", fresh.Len(), len(big)+1000)
	} else {
		publish(fresh, c)
	}

	// Another dataset holds nothing yet.
	otherParts, _ := storage.DatasetParts(store, "other")
	other, _ := storage.NewPartIndex(kv, otherParts, "other", short)
	if f, c, err := other.Claim(ctx, recordIDs(0, 10), nil); err != nil || countNew(f) != 10 || c.Number != 0 {
		t.Errorf("other dataset: %d new as part %v, %v", countNew(f), c, err)
	}
}

// write writes s.
func write(s string) func(io.Writer) error {
	return func(w io.Writer) error { _, err := io.WriteString(w, s); return err }
}

// A dataset's parts numbered by its part index are listed by their numbers
// (IndexedDatasetParts): past a claim abandoned and one in flight (entries
// without an object) and an object stored after its claim was given up for
// dead (its records may be stored again), across more than one window of
// numbers, up to the
// first number without an entry, with the parts stored before the index
// (below its base) found by the store's listing. The listing from the base
// on creates no consumer on lf_artifacts' stream (a listing of every
// object), and a dataset whose index has no base yet is listed whole.
// Publish, which numbers parts outside the index, is refused.
func TestIndexedDatasetPartsListedByNumber(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	bus, kv, store := datasetBeforeIndex(ctx, t)
	parts, err := storage.IndexedDatasetParts(store, kv, "ds")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := storage.IndexedDatasetParts(store, kv, "bad name"); !errors.Is(err, storage.ErrInvalidKey) {
		t.Errorf("IndexedDatasetParts(bad name) = %v", err)
	}
	numbers := func(from int) []int {
		t.Helper()
		list, err := parts.ListFrom(ctx, from)
		if err != nil {
			t.Fatal(err)
		}
		return partNumbers(list)
	}
	if got := numbers(0); fmt.Sprint(got) != "[0 1]" {
		t.Errorf("before the index: parts %v, want [0 1]", got)
	}
	x, err := storage.NewPartIndex(kv, parts, "ds", storage.PartIndexOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var want []int
	for i := range 40 {
		_, c, err := x.Claim(ctx, recordIDs(10*i, 10*i+10), nil)
		if err != nil {
			t.Fatal(err)
		}
		switch i {
		case 3: // abandoned
			err = x.Abandon(ctx, c)
		case 5: // in flight: claimed, not stored yet
		case 7: // stored after another writer gave the claim up for dead
			if _, err = parts.Create(ctx, c.Number, write(c.Key)); err == nil {
				_, err = kv.Create(ctx, "ds/done/"+strconv.Itoa(c.Number), []byte("abandoned"))
			}
			if err == nil {
				if err = x.Commit(ctx, c); errors.Is(err, storage.ErrAbandoned) {
					err = nil
				} else {
					err = fmt.Errorf("commit of a claim given up: %v, want ErrAbandoned", err)
				}
			}
		default:
			if _, err = parts.Create(ctx, c.Number, write(c.Key)); err == nil {
				err = x.Commit(ctx, c)
			}
			want = append(want, c.Number)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if want[0] != 2 {
		t.Fatalf("first indexed part %d, want 2 (after the two stored before)", want[0])
	}
	// A stray object past the last entry is no part.
	if _, err := store.Put(ctx, parts.Key(50), write("stray")); err != nil {
		t.Fatal(err)
	}
	listings := bucketListings(t, bus)
	for _, first := range []int{2, 5, 8, 40, 43} {
		wantFrom := slices.DeleteFunc(slices.Clone(want), func(n int) bool { return n < first })
		if got := numbers(first); !slices.Equal(got, wantFrom) {
			t.Errorf("ListFrom(%d) = %v, want %v", first, got, wantFrom)
		}
	}
	if n := listings(); n != 0 {
		t.Errorf("listing from the index's base created %d consumers on lf_artifacts' stream", n)
	}
	// A number taken out of the index would be in neither it nor a listing.
	if _, err := parts.Publish(ctx, write("out of the index")); !errors.Is(err, storage.ErrInvalidOption) {
		t.Errorf("Publish on indexed parts = %v, want ErrInvalidOption", err)
	}
	// From 0: the two parts before the index too.
	if got, wantAll := numbers(0), append([]int{0, 1}, want...); !slices.Equal(got, wantAll) {
		t.Errorf("List = %v, want %v", got, wantAll)
	}
}

// datasetBeforeIndex starts a bus with the object store and lf_dedupe, and
// stores two parts of dataset ds as they were before its part index
// existed (numbered by Publish).
func datasetBeforeIndex(ctx context.Context, t *testing.T) (*pipeline.Bus, *pipeline.KV, *storage.Objects) {
	t.Helper()
	_, bus := pipelinetest.StartBus(t)
	kv, err := bus.KV(ctx, pipeline.BucketDedupe)
	if err != nil {
		t.Fatal(err)
	}
	store, err := storage.OpenObjects(ctx, bus, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	parts, _ := storage.DatasetParts(store, "ds")
	for range 2 {
		if _, err := parts.Publish(ctx, write("old")); err != nil {
			t.Fatal(err)
		}
	}
	return bus, kv, store
}

// partNumbers are the numbers of listed parts (or rejects), in order.
func partNumbers(list []storage.Info) []int {
	var got []int
	for _, in := range list {
		_, digits, _ := strings.Cut(strings.TrimSuffix(path.Base(in.Key), path.Ext(in.Key)), "-")
		n, _ := strconv.Atoi(digits)
		got = append(got, n)
	}
	return got
}
