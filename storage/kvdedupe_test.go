package storage_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/storage"
)

// TestSharedDeduper: two writers (two processes: a Shared each) on one
// bucket. An id claimed and committed by one is a duplicate for the other;
// one claimed and in flight makes the other's claim fail with
// ErrClaimPending (retried later); released ids are new again; a claim
// that outlived its lease uncommitted (its writer died) is taken over.
func TestSharedDeduper(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, bus := pipelinetest.StartBus(t)
	kv, err := bus.KV(ctx, pipeline.BucketDedupe)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := storage.NewShared(kv, "ds", 0)
	b, _ := storage.NewShared(kv, "ds", 0)
	if _, err := storage.NewShared(kv, "bad name", 0); !errors.Is(err, storage.ErrInvalidKey) {
		t.Errorf("NewShared(bad name) = %v", err)
	}
	ids := func(from, to int) []string {
		var out []string
		for i := from; i < to; i++ {
			out = append(out, fmt.Sprintf("%064x", i))
		}
		return out
	}
	count := func(fresh []bool) (n int) {
		for _, f := range fresh {
			if f {
				n++
			}
		}
		return n
	}
	// a claims 0..1000 (with a repeat) and commits.
	fa, err := a.Claim(ctx, append(ids(0, 1000), ids(0, 1)...))
	if err != nil || count(fa) != 1000 || fa[1000] {
		t.Fatalf("a's first claim: %d new, %v", count(fa), err)
	}
	if err := a.Commit(ctx, ids(0, 1000)); err != nil {
		t.Fatal(err)
	}
	// b overlaps half: the committed half are duplicates.
	fb, err := b.Claim(ctx, ids(500, 1500))
	if err != nil || count(fb) != 500 || fb[0] || !fb[500] {
		t.Fatalf("b's claim: %d new (want 500: 1000..1499), %v", count(fb), err)
	}
	// a claims ids b holds in flight: pending, and a's own new ones released.
	if _, err := a.Claim(ctx, ids(1400, 1600)); !errors.Is(err, storage.ErrClaimPending) {
		t.Fatalf("claim of ids in flight = %v, want ErrClaimPending", err)
	}
	if f, err := b.Claim(ctx, ids(1500, 1600)); err != nil || count(f) != 100 {
		t.Errorf("ids a gave back: %d new, %v", count(f), err)
	}
	// b releases what it claimed first: new again for a.
	if err := b.Release(ctx, ids(500, 1500)); err != nil {
		t.Fatal(err)
	}
	if f, err := a.Claim(ctx, ids(1000, 1100)); err != nil || count(f) != 100 {
		t.Errorf("released ids: %d new, %v", count(f), err)
	}
	// b dies holding 1500..1600 uncommitted; c, with a short lease, takes them over.
	c, _ := storage.NewShared(kv, "ds", time.Nanosecond)
	if f, err := c.Claim(ctx, ids(1500, 1600)); err != nil || count(f) != 100 {
		t.Errorf("abandoned claims: %d taken over, %v", count(f), err)
	}
	// Another collection holds nothing yet.
	other, _ := storage.NewShared(kv, "other", 0)
	if f, err := other.Claim(ctx, ids(0, 10)); err != nil || count(f) != 10 {
		t.Errorf("other collection: %d new, %v", count(f), err)
	}
}
