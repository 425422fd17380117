package storage

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/largeforge/largeforge/pipeline"
)

// ErrClaimPending is returned by a shared Deduper's Claim when another
// writer holds some of the ids in a claim it has not yet committed nor
// outlived: the caller retries later (the batch is redelivered), when the
// claim is committed (the ids are duplicates) or abandoned (they are new).
var ErrClaimPending = errors.New("storage: record ids claimed by a writer in flight")

// DefaultClaimLease is how long a claim not committed holds its ids before
// another writer may take them over: longer than a batch takes from its
// claim to its part's publication.
const DefaultClaimLease = 2 * time.Minute

// Shared is a Deduper in a KV bucket (lf_dedupe) shared by every writer of
// a collection on every machine: each id is a key <collection>/<id> created
// once, so of two writers claiming it one wins. A Claim creates the keys of
// its new ids in one pipelined round of KV creates, all holding one token;
// Commit, after the part is published, writes <collection>/_batch/<token>
// once for the batch. An id claimed by another token is a duplicate when
// that token is committed; held by a writer in flight (ErrClaimPending)
// while the claim is younger than the lease; and taken over (compare and
// set on its revision) when older: its writer died before publishing.
// Ids this process saw committed are remembered, and cost no round trip.
type Shared struct {
	kv     *pipeline.KV
	prefix string
	lease  time.Duration
	known  *Memory

	mu      sync.Mutex
	pending map[string]string // id → token of this process's uncommitted claims
}

var _ Deduper = (*Shared)(nil)

// NewShared returns the Deduper of collection (a dataset name) in kv;
// lease 0 is DefaultClaimLease.
func NewShared(kv *pipeline.KV, collection string, lease time.Duration) (*Shared, error) {
	if kv == nil {
		return nil, fmt.Errorf("%w: nil dedupe bucket", ErrInvalidOption)
	}
	if !kvKeyRE.MatchString(collection) {
		return nil, fmt.Errorf("%w: collection %q", ErrInvalidKey, collection)
	}
	if lease <= 0 {
		lease = DefaultClaimLease
	}
	return &Shared{kv: kv, prefix: collection + "/", lease: lease, known: NewMemory(), pending: map[string]string{}}, nil
}

// Add records ids as held (the ids of parts read), so they cost no claim.
func (s *Shared) Add(ids ...string) { s.known.Add(ids...) }

// key is id's entry (an id a KV key cannot hold is encoded).
func (s *Shared) key(id string) string { return s.prefix + claimKey(id) }

func (s *Shared) batchKey(token string) string { return s.prefix + "_batch/" + token }

// Claim implements Deduper.
func (s *Shared) Claim(ctx context.Context, ids []string) ([]bool, error) {
	fresh := make([]bool, len(ids))
	at := map[string]int{} // id → its first index
	var cand []string
	for i, id := range ids {
		if _, dup := at[id]; dup {
			continue
		}
		at[id] = i
		if !s.known.Has(id) {
			cand = append(cand, id)
		}
	}
	if len(cand) == 0 {
		return fresh, nil
	}
	token, err := newToken()
	if err != nil {
		return nil, err
	}
	keys := make([]string, len(cand))
	for j, id := range cand {
		keys[j] = s.key(id)
	}
	created, err := s.kv.CreateMany(ctx, keys, []byte(token))
	if err != nil {
		return nil, fmt.Errorf("claim: %w", err)
	}
	var mine, theirs []string
	for j, id := range cand {
		if created[j] {
			mine = append(mine, id)
		} else {
			theirs = append(theirs, id)
		}
	}
	s.note(mine, token)
	took, err := s.resolve(ctx, theirs, token)
	if err != nil {
		return nil, errors.Join(err, s.Release(ctx, mine))
	}
	s.note(took, token)
	for _, id := range append(mine, took...) {
		fresh[at[id]] = true
	}
	return fresh, nil
}

// note records ids as claimed by this process under token.
func (s *Shared) note(ids []string, token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		s.pending[id] = token
	}
}

// resolveWorkers bounds the reads of other writers' claims at once.
const resolveWorkers = 32

// resolve settles the ids another token claimed first: duplicates when the
// token is committed, ErrClaimPending when it is in flight, taken over
// (returned) when it outlived the lease uncommitted.
func (s *Shared) resolve(ctx context.Context, ids []string, token string) ([]string, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	entries := make([]pipeline.Entry, len(ids))
	errs := make([]error, len(ids))
	var wg sync.WaitGroup
	sem := make(chan struct{}, resolveWorkers)
	for i, id := range ids {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			entries[i], errs[i] = s.kv.Get(ctx, s.key(id))
		}()
	}
	wg.Wait()
	committed := map[string]bool{}
	var took []string
	for i, id := range ids {
		if errs[i] != nil {
			return nil, fmt.Errorf("claim %s: %w", id, errs[i]) // deleted meanwhile: retried later
		}
		other := string(entries[i].Value)
		done, ok := committed[other]
		if !ok {
			_, err := s.kv.Get(ctx, s.batchKey(other))
			if err != nil && !errors.Is(err, pipeline.ErrKeyNotFound) {
				return nil, fmt.Errorf("claim %s: %w", id, err)
			}
			done = err == nil
			committed[other] = done
		}
		switch {
		case done:
			s.known.Add(id)
		case time.Since(entries[i].Created) < s.lease:
			return nil, fmt.Errorf("%w: %s by %s", ErrClaimPending, id, other)
		default: // abandoned: its writer died between claim and commit
			if _, err := s.kv.Update(ctx, s.key(id), []byte(token), entries[i].Revision); err != nil {
				return nil, fmt.Errorf("%w: take over %s: %w", ErrClaimPending, id, err)
			}
			took = append(took, id)
		}
	}
	return took, nil
}

// Commit implements Deduper: the part holding ids is published, so their
// claims are final.
func (s *Shared) Commit(ctx context.Context, ids []string) error {
	s.mu.Lock()
	tokens := map[string]bool{}
	for _, id := range ids {
		if t, ok := s.pending[id]; ok {
			tokens[t] = true
		}
	}
	s.mu.Unlock()
	for t := range tokens {
		if _, err := s.kv.Put(ctx, s.batchKey(t), nil); err != nil {
			return fmt.Errorf("commit claims: %w", err)
		}
	}
	s.mu.Lock()
	for _, id := range ids {
		delete(s.pending, id)
	}
	s.mu.Unlock()
	s.known.Add(ids...)
	return nil
}

// Release implements Deduper: it deletes this process's uncommitted claims
// of ids.
func (s *Shared) Release(ctx context.Context, ids []string) error {
	var errs []error
	for _, id := range ids {
		s.mu.Lock()
		_, mine := s.pending[id]
		delete(s.pending, id)
		s.mu.Unlock()
		if mine {
			if err := s.kv.Delete(ctx, s.key(id)); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("release claims: %w", err)
	}
	return nil
}

// newToken names one claim: random, so no two writers share it.
func newToken() (string, error) {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("claim token: %w", err)
	}
	return hex.EncodeToString(b), nil
}
