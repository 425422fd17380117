// Package storagetest checks what parts writers leave in a store, for the
// tests of the writers that share storage.Parts (the dataset and results
// sinks), and fills stores for benchmarks.
package storagetest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/largeforge/largeforge/internal/benchenv"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/storage"
)

// ErrTwice is returned by IDsOnce when an id is in two parts.
var ErrTwice = errors.New("storagetest: id stored twice")

// IDsOnce reads the ids of every part of parts with ids and returns how many
// distinct ids they hold and how many parts there are; an id in two parts is
// an error wrapping ErrTwice.
func IDsOnce(ctx context.Context, parts *storage.Parts, ids func(key string) ([]string, error)) (distinct, n int, err error) {
	list, err := parts.List(ctx)
	if err != nil {
		return 0, 0, err
	}
	where := map[string]string{}
	for _, p := range list {
		got, err := ids(p.Key)
		if err != nil {
			return 0, 0, err
		}
		for _, id := range got {
			if prev, dup := where[id]; dup {
				return 0, 0, fmt.Errorf("%w: %s in %s and %s", ErrTwice, id, prev, p.Key)
			}
			where[id] = p.Key
		}
	}
	return len(where), len(list), nil
}

// BusyArtifacts starts a bus (pipelinetest.StartBus) whose lf_artifacts
// holds LF_BENCH_LIST_OBJECTS (default 20000) one-byte results parts of
// other jobs (other0, other1, ..., 64 parts each), and returns it, its
// artifact store and that count: the busy bucket of the benchmarks of what
// must not read every object.
func BusyArtifacts(tb testing.TB) (*pipeline.Bus, *storage.Objects, int) {
	tb.Helper()
	ctx := context.Background()
	_, bus := pipelinetest.StartBus(tb)
	s, err := storage.OpenObjects(ctx, bus, tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	n := benchenv.Int("LF_BENCH_LIST_OBJECTS", 20000)
	const perJob = 64
	for j := 0; j*perJob < n; j++ {
		p, err := storage.JobParts(s, fmt.Sprintf("other%d", j))
		if err != nil {
			tb.Fatal(err)
		}
		for range min(perJob, n-j*perJob) {
			if _, err := p.Publish(ctx, func(w io.Writer) error {
				_, err := io.WriteString(w, "x")
				return err
			}); err != nil {
				tb.Fatal(err)
			}
		}
	}
	return bus, s, n
}
