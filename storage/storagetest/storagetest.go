// Package storagetest checks what parts writers leave in a store, for the
// tests of the writers that share storage.Parts (the dataset and results
// sinks).
package storagetest

import (
	"context"
	"errors"
	"fmt"

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
