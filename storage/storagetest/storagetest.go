// Package storagetest checks what parts writers leave in a store, for the
// tests of the writers that share storage.Parts (the dataset and results
// sinks), and fills stores for benchmarks.
package storagetest

import (
	"context"
	"errors"
	"fmt"
	"io"

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

// FillJobParts stores n one-byte results parts of other jobs (other0,
// other1, ..., 64 parts each) in s: the objects of a busy bucket, for the
// benchmarks of what must not read them all.
func FillJobParts(ctx context.Context, s storage.Store, n int) error {
	const perJob = 64
	for j := 0; j*perJob < n; j++ {
		p, err := storage.JobParts(s, fmt.Sprintf("other%d", j))
		if err != nil {
			return err
		}
		for range min(perJob, n-j*perJob) {
			if _, err := p.Publish(ctx, func(w io.Writer) error {
				_, err := io.WriteString(w, "x")
				return err
			}); err != nil {
				return err
			}
		}
	}
	return nil
}
