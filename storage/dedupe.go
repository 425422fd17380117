package storage

import (
	"context"
	"encoding/hex"
	"strings"
	"sync"
)

// Deduper knows which record ids a collection (a dataset, a job) holds, so
// that each is written once however many writers see it. A writer claims
// the ids of a part before publishing it and releases the claim when the
// part could not be published, and commits it when the part is. Memory is
// the in-process Deduper; Shared is in a KV bucket (lf_dedupe) shared by
// every sink.
type Deduper interface {
	// Claim reports for each id whether it is new (not held, not claimed,
	// not earlier in ids) and claims the new ones.
	Claim(ctx context.Context, ids []string) ([]bool, error)
	// Release gives back claimed ids whose part was not published.
	Release(ctx context.Context, ids []string) error
	// Commit makes the claims of ids final once their part is published.
	Commit(ctx context.Context, ids []string) error
}

// Memory is a Deduper in this process's memory, seeded with Add from the
// parts stored. Ids of 64 hex digits (sha256 record ids) take 32 bytes each.
type Memory struct {
	mu    sync.Mutex
	hex   map[[32]byte]struct{}
	other map[string]struct{}
}

var _ Deduper = (*Memory)(nil)

// NewMemory returns an empty Memory.
func NewMemory() *Memory {
	return &Memory{hex: map[[32]byte]struct{}{}, other: map[string]struct{}{}}
}

// Add records ids as held.
func (m *Memory) Add(ids ...string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, id := range ids {
		m.add(id)
	}
}

// hexKey is the 32 bytes of an id of 64 lowercase hex digits.
func hexKey(id string) ([32]byte, bool) {
	var k [32]byte
	if len(id) != 64 || strings.ToLower(id) != id {
		return k, false
	}
	_, err := hex.Decode(k[:], []byte(id))
	return k, err == nil
}

// add records id and reports whether it was new; m.mu is held.
func (m *Memory) add(id string) bool {
	if k, ok := hexKey(id); ok {
		if _, held := m.hex[k]; held {
			return false
		}
		m.hex[k] = struct{}{}
		return true
	}
	if _, held := m.other[id]; held {
		return false
	}
	m.other[id] = struct{}{}
	return true
}

// Len is the number of ids held or claimed.
func (m *Memory) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.hex) + len(m.other)
}

// Claim implements Deduper.
func (m *Memory) Claim(_ context.Context, ids []string) ([]bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	fresh := make([]bool, len(ids))
	for i, id := range ids {
		fresh[i] = m.add(id)
	}
	return fresh, nil
}

// Has reports whether id is held or claimed.
func (m *Memory) Has(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if k, ok := hexKey(id); ok {
		_, held := m.hex[k]
		return held
	}
	_, held := m.other[id]
	return held
}

// Commit implements Deduper: Memory's claims are final when made.
func (m *Memory) Commit(context.Context, []string) error { return nil }

// Release implements Deduper.
func (m *Memory) Release(_ context.Context, ids []string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, id := range ids {
		if k, ok := hexKey(id); ok {
			delete(m.hex, k)
		} else {
			delete(m.other, id)
		}
	}
	return nil
}
