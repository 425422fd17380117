package storage

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/largeforge/largeforge/pipeline"
)

// ErrClaimPending is returned by PartIndex.Claim when some of the ids are
// in a part another writer claimed and has neither published nor given up
// while its lease runs: the caller retries later (the batch is
// redelivered), when that part is published (the ids are duplicates) or
// abandoned (they are new).
var ErrClaimPending = errors.New("storage: record ids claimed by a writer in flight")

// ErrAbandoned is returned by PartIndex.Commit when another writer gave the
// claim up for dead (its lease ran out) before the part was committed: the
// part's ids may be stored again, so the part must not count.
var ErrAbandoned = errors.New("storage: part claim abandoned after its lease")

// DefaultClaimLease is how long a claimed part that is neither published
// nor given up holds its ids before another writer resolves it: longer
// than a batch takes from its claim to its part's publication.
const DefaultClaimLease = time.Minute

// PartIndexOptions tune a PartIndex.
type PartIndexOptions struct {
	// Lease is how long a claim neither committed nor abandoned holds its
	// ids (0: DefaultClaimLease).
	Lease time.Duration
	// Wait is how long Claim waits for another writer's parts in flight
	// holding some of its ids before ErrClaimPending (0: the lease and 10
	// seconds, so that a dead writer's claim is resolved in the wait, not
	// after the caller's retries ran out).
	Wait time.Duration
}

// inlineIDs is the most ids an index entry holds in its own value; more go
// to chunk entries of chunkIDs each (a KV value is at most max_payload, 1 MiB).
const (
	inlineIDs = 40_000
	chunkIDs  = 40_000
)

// Part states in <collection>/done/<n>.
const (
	stateCommitted = "committed"
	stateAbandoned = "abandoned"
)

// idKey is a record id as the index holds it: the first 16 bytes of its
// SHA-256 (64 hex digits).
type idKey [16]byte

func recordIDKey(id string) (idKey, bool) {
	var k idKey
	if len(id) != 64 {
		return k, false
	}
	var full [32]byte
	if _, err := hex.Decode(full[:], []byte(id)); err != nil {
		return k, false
	}
	copy(k[:], full[:16])
	return k, true
}

// IsRecordID reports whether id is a record id a PartIndex holds (64 hex
// digits).
func IsRecordID(id string) bool {
	_, ok := recordIDKey(id)
	return ok
}

// PartIndex deduplicates the records of a collection's parts (a dataset)
// across every writer on every machine through a KV bucket (lf_dedupe):
// one entry per part, not per record. Part n's entry
// <collection>/ids/<n> lists the ids the part holds (16 bytes each) and
// the shard message ids it took; it is created once, by the writer that
// claims number n, and creating it is the claim. A writer claims the next
// number only after reading every entry below it, so the ids it lists are
// in no earlier part, and every later claimant reads them: two writers of
// overlapping records store each record once. Parts are numbered from
// <collection>/base (the first number after the parts stored before).
//
// A claimed part is then published (Parts.Create of its number) and
// committed: <collection>/done/<n> is created holding "committed", or
// "abandoned" when the writer could not publish it. A claim left neither
// (its writer died) holds its ids until its lease ends; then the next
// writer that needs them resolves it: committed when the part's object
// exists (the writer died after publishing it, so its records are not
// stored again), else abandoned, and its ids are free. The done entry is
// created once, so a writer that outlived its lease learns from Commit
// (ErrAbandoned) that its part no longer counts.
//
// Each process keeps the ids it has read in memory (about 40 bytes each)
// and reads only the entries added since, before each claim.
type PartIndex struct {
	kv     *pipeline.KV
	parts  *Parts
	prefix string
	lease  time.Duration
	wait   time.Duration

	mu      sync.Mutex
	started bool
	base    int
	next    int                   // the next entry to read
	ids     map[idKey]int32       // id → its part (-1: a part stored before the index)
	shards  map[string]int        // shard ids of committed parts → their part
	pending map[int]*pendingEntry // parts claimed, not yet committed or abandoned
	mine    map[int]bool          // parts this process claimed
}

type pendingEntry struct {
	ids     []idKey
	shards  []string
	created time.Time
}

// indexHeader is the JSON first line of an index entry.
type indexHeader struct {
	Token  string   `json:"token"`
	Key    string   `json:"key"`
	IDs    int      `json:"ids"`
	Chunks int      `json:"chunks,omitempty"` // ids in <collection>/chunk/<token>/<k> rather than here
	Shards []string `json:"shards,omitempty"`
}

// PartClaim is a part number claimed with its ids, to publish and Commit,
// or Abandon.
type PartClaim struct {
	Number int
	Key    string
	Shards []string
	token  string
}

// NewPartIndex returns the index of parts in kv, under collection (a
// dataset name).
func NewPartIndex(kv *pipeline.KV, parts *Parts, collection string, o PartIndexOptions) (*PartIndex, error) {
	if kv == nil || parts == nil {
		return nil, fmt.Errorf("%w: a part index needs its bucket and parts", ErrInvalidOption)
	}
	if !kvKeyRE.MatchString(collection) {
		return nil, fmt.Errorf("%w: collection %q", ErrInvalidKey, collection)
	}
	if o.Lease <= 0 {
		o.Lease = DefaultClaimLease
	}
	if o.Wait <= 0 {
		o.Wait = o.Lease + 10*time.Second
	}
	return &PartIndex{kv: kv, parts: parts, prefix: collection + "/", lease: o.Lease, wait: o.Wait,
		ids: map[idKey]int32{}, shards: map[string]int{}, pending: map[int]*pendingEntry{}, mine: map[int]bool{}}, nil
}

func (x *PartIndex) entryKey(n int) string { return indexEntryKey(x.prefix, n) }

// indexEntryKey is part n's entry in the index of collection/ (its claim),
// indexBaseKey the key of the index's first number.
func indexEntryKey(prefix string, n int) string { return prefix + "ids/" + strconv.Itoa(n) }
func indexBaseKey(prefix string) string         { return prefix + "base" }
func (x *PartIndex) doneKey(n int) string       { return indexDoneKey(x.prefix, n) }

// indexDoneKey is part n's state (committed or abandoned) in the index of
// collection/.
func indexDoneKey(prefix string, n int) string { return prefix + "done/" + strconv.Itoa(n) }
func (x *PartIndex) chunkKey(token string, k int) string {
	return x.prefix + "chunk/" + token + "/" + strconv.Itoa(k)
}

// Add records ids as stored in a part written before the index (read
// from the parts themselves).
func (x *PartIndex) Add(ids ...string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, id := range ids {
		if k, ok := recordIDKey(id); ok {
			x.ids[k] = -1
		}
	}
}

// Len is the number of ids stored or claimed that this process has read.
func (x *PartIndex) Len() int {
	x.mu.Lock()
	defer x.mu.Unlock()
	return len(x.ids)
}

// HasShard reports whether a committed part holds the shard message id.
func (x *PartIndex) HasShard(id string) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	_, ok := x.shards[id]
	return ok
}

// ShardPart reads the entries and states added since the last read and
// returns the committed part that holds the shard message id: a shard
// redelivered after a writer stored it (its ack lost, or the writer gone
// before acking) is found there. A part in flight that holds the shard is
// waited for as Claim waits (committed when its writer died after storing
// it, once its lease is over); ErrClaimPending after Options.Wait.
func (x *PartIndex) ShardPart(ctx context.Context, id string) (n int, ok bool, err error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if err := x.refresh(ctx); err != nil {
		return 0, false, err
	}
	deadline := time.Now().Add(x.wait)
	for try := 0; ; try++ {
		if n, ok := x.shards[id]; ok {
			return n, true, nil
		}
		var inFlight []int
		for n, p := range x.pending {
			if !x.mine[n] && slices.Contains(p.shards, id) {
				inFlight = append(inFlight, n)
			}
		}
		if len(inFlight) == 0 {
			return 0, false, nil
		}
		if err := x.resolve(ctx, inFlight, try, time.Now().After(deadline)); err != nil {
			return 0, false, err
		}
	}
}

// Base is the first part number the index lists: the parts below it were
// stored before it, and their ids are Added from the parts themselves.
func (x *PartIndex) Base(ctx context.Context) (int, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if err := x.start(ctx); err != nil {
		return 0, err
	}
	return x.base, nil
}

// start reads (or sets) the first number of the index: after every part
// stored when the first writer started it.
func (x *PartIndex) start(ctx context.Context) error {
	if x.started {
		return nil
	}
	e, err := x.kv.Get(ctx, indexBaseKey(x.prefix))
	if errors.Is(err, pipeline.ErrKeyNotFound) {
		base := 0
		list, lerr := x.parts.List(ctx)
		if lerr != nil {
			return lerr
		}
		if n := len(list); n > 0 {
			last, _ := numbered(list[n-1].Key, x.parts.base, x.parts.ext)
			base = last + 1
		}
		if _, err = x.kv.Create(ctx, indexBaseKey(x.prefix), []byte(strconv.Itoa(base))); err == nil {
			x.base, x.next, x.started = base, base, true
			return nil
		}
		if errors.Is(err, pipeline.ErrKeyExists) {
			e, err = x.kv.Get(ctx, indexBaseKey(x.prefix))
		}
	}
	if err != nil {
		return fmt.Errorf("part index base: %w", err)
	}
	if x.base, err = strconv.Atoi(string(e.Value)); err != nil {
		return fmt.Errorf("part index base %q: %w", e.Value, err)
	}
	x.next = x.base
	x.started = true
	return nil
}

// refresh reads the entries added since the last refresh, and the states
// of the parts pending.
func (x *PartIndex) refresh(ctx context.Context) error {
	if err := x.start(ctx); err != nil {
		return err
	}
	for {
		e, err := x.kv.Get(ctx, x.entryKey(x.next))
		if errors.Is(err, pipeline.ErrKeyNotFound) {
			break
		}
		if err != nil {
			return fmt.Errorf("part index: %w", err)
		}
		if err := x.read(ctx, x.next, e); err != nil {
			return err
		}
		x.next++
	}
	for n := range x.pending {
		if err := x.readState(ctx, n); err != nil {
			return err
		}
	}
	return nil
}

// read takes in entry n: its ids are claimed, pending until its state says.
func (x *PartIndex) read(ctx context.Context, n int, e pipeline.Entry) error {
	hdr, ids, err := x.decode(ctx, e.Value)
	if err != nil {
		return fmt.Errorf("part index entry %d: %w", n, err)
	}
	for _, k := range ids {
		x.ids[k] = int32(n)
	}
	x.pending[n] = &pendingEntry{ids: ids, shards: hdr.Shards, created: e.Created}
	return x.readState(ctx, n)
}

// readState applies part n's done entry, when it has one.
func (x *PartIndex) readState(ctx context.Context, n int) error {
	e, err := x.kv.Get(ctx, x.doneKey(n))
	if errors.Is(err, pipeline.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("part index state %d: %w", n, err)
	}
	x.settle(n, string(e.Value))
	return nil
}

// settle ends part n's pending state.
func (x *PartIndex) settle(n int, state string) {
	p := x.pending[n]
	if p == nil {
		return
	}
	delete(x.pending, n)
	if state == stateCommitted {
		for _, s := range p.shards {
			x.shards[s] = n
		}
		return
	}
	for _, k := range p.ids {
		if x.ids[k] == int32(n) {
			delete(x.ids, k)
		}
	}
}

func (x *PartIndex) decode(ctx context.Context, value []byte) (indexHeader, []idKey, error) {
	var hdr indexHeader
	line, rest, ok := bytes.Cut(value, []byte("\n"))
	if !ok {
		return hdr, nil, errors.New("no header line")
	}
	if err := json.Unmarshal(line, &hdr); err != nil {
		return hdr, nil, err
	}
	for k := range hdr.Chunks {
		e, err := x.kv.Get(ctx, x.chunkKey(hdr.Token, k))
		if err != nil {
			return hdr, nil, err
		}
		rest = append(rest, e.Value...)
	}
	if len(rest) != 16*hdr.IDs {
		return hdr, nil, fmt.Errorf("%d bytes of ids, want %d", len(rest), 16*hdr.IDs)
	}
	ids := make([]idKey, hdr.IDs)
	for i := range ids {
		copy(ids[i][:], rest[16*i:])
	}
	return hdr, ids, nil
}

// Claim reports for each of ids whether it is new (in no part, not
// earlier in ids; ids that are not record ids are never new) and claims
// the next part number for the new ones and shards. The caller publishes
// the part under the claim's number (Parts.Create) and then Commits it,
// or Abandons it when it could not. ids in a part another writer is
// publishing are waited for until it commits or gives them up, or its lease
// ends (then they are resolved); ErrClaimPending after Options.Wait.
func (x *PartIndex) Claim(ctx context.Context, ids, shards []string) ([]bool, *PartClaim, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	token, err := newToken()
	if err != nil {
		return nil, nil, err
	}
	for range maxCollisions {
		if err := x.refresh(ctx); err != nil {
			return nil, nil, err
		}
		fresh, keys, err := x.fresh(ctx, ids)
		if err != nil {
			return nil, nil, err
		}
		n := x.next
		value, err := x.encode(ctx, token, indexHeader{Token: token, Key: x.parts.Key(n), IDs: len(keys), Shards: shards}, keys)
		if err != nil {
			return nil, nil, err
		}
		_, err = x.kv.Create(ctx, x.entryKey(n), value)
		if errors.Is(err, pipeline.ErrKeyExists) {
			continue // another writer took n: read it, check again
		}
		if err != nil {
			return nil, nil, fmt.Errorf("claim part %d: %w", n, err)
		}
		for _, k := range keys {
			x.ids[k] = int32(n)
		}
		x.pending[n] = &pendingEntry{ids: keys, shards: shards, created: time.Now()}
		x.mine[n] = true
		x.next++
		return fresh, &PartClaim{Number: n, Key: x.parts.Key(n), Shards: shards, token: token}, nil
	}
	return nil, nil, fmt.Errorf("claim a part of %s: %w: %d numbers taken meanwhile", x.prefix, ErrExists, maxCollisions)
}

// fresh sorts ids into new ones and duplicates; ids in another writer's
// part in flight are waited for, then resolved or ErrClaimPending.
func (x *PartIndex) fresh(ctx context.Context, ids []string) ([]bool, []idKey, error) {
	deadline := time.Now().Add(x.wait)
	for try := 0; ; try++ {
		fresh := make([]bool, len(ids))
		seen := make(map[idKey]struct{}, len(ids))
		var keys []idKey
		var waiting []int
		for i, id := range ids {
			k, ok := recordIDKey(id)
			if !ok {
				continue
			}
			if _, dup := seen[k]; dup {
				continue
			}
			seen[k] = struct{}{}
			n, held := x.ids[k]
			if !held {
				fresh[i] = true
				keys = append(keys, k)
				continue
			}
			if _, inFlight := x.pending[int(n)]; inFlight && !x.mine[int(n)] {
				waiting = append(waiting, int(n))
			}
		}
		if len(waiting) == 0 {
			return fresh, keys, nil
		}
		if err := x.resolve(ctx, waiting, try, time.Now().After(deadline)); err != nil {
			return nil, nil, err
		}
	}
}

// resolve reads the states of the parts pending; one that outlived its
// lease is settled (committed when its object exists, else abandoned).
// Parts still in flight are waited for a little (longer each try), then
// ErrClaimPending when last is set.
func (x *PartIndex) resolve(ctx context.Context, parts []int, try int, last bool) error {
	var inFlight []int
	for _, n := range parts {
		p := x.pending[n]
		if p == nil {
			continue
		}
		if err := x.readState(ctx, n); err != nil {
			return err
		}
		if x.pending[n] == nil {
			continue
		}
		if time.Since(p.created) < x.lease {
			inFlight = append(inFlight, n)
			continue
		}
		state := stateAbandoned
		exists, err := x.parts.Exists(ctx, n)
		if err != nil {
			return err
		}
		if exists { // its writer died after publishing it
			state = stateCommitted
		}
		if err := x.setState(ctx, n, state); err != nil && !errors.Is(err, ErrAbandoned) {
			return err
		}
	}
	if len(inFlight) == 0 {
		return nil
	}
	if last {
		return fmt.Errorf("%w: parts %v of %s", ErrClaimPending, inFlight, x.prefix)
	}
	t := time.NewTimer(min(20*time.Millisecond<<min(try, 5), 500*time.Millisecond))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// setState creates part n's done entry; when it exists already, its state
// is taken, and ErrAbandoned returned when it is not the one wanted.
func (x *PartIndex) setState(ctx context.Context, n int, state string) error {
	_, err := x.kv.Create(ctx, x.doneKey(n), []byte(state))
	if errors.Is(err, pipeline.ErrKeyExists) {
		e, gerr := x.kv.Get(ctx, x.doneKey(n))
		if gerr != nil {
			return fmt.Errorf("part %d state: %w", n, gerr)
		}
		x.settle(n, string(e.Value))
		if string(e.Value) != state {
			return fmt.Errorf("part %d of %s: %w", n, x.prefix, ErrAbandoned)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("part %d state: %w", n, err)
	}
	x.settle(n, state)
	return nil
}

// encode is an index entry: its header line and the ids, inline or in
// chunk entries written first.
func (x *PartIndex) encode(ctx context.Context, token string, hdr indexHeader, keys []idKey) ([]byte, error) {
	raw := make([]byte, 0, 16*len(keys))
	for _, k := range keys {
		raw = append(raw, k[:]...)
	}
	if len(keys) > inlineIDs {
		for k := 0; len(raw) > 0; k++ {
			chunk := raw[:min(len(raw), 16*chunkIDs)]
			if _, err := x.kv.Put(ctx, x.chunkKey(token, k), chunk); err != nil {
				return nil, fmt.Errorf("part index chunk: %w", err)
			}
			raw = raw[len(chunk):]
			hdr.Chunks++
		}
	}
	line, err := json.Marshal(hdr)
	if err != nil {
		return nil, err
	}
	return append(append(line, '\n'), raw...), nil
}

// Commit records the claimed part as published. ErrAbandoned means
// another writer gave the claim up first (this writer outlived its lease):
// the part's records may be stored again, and the caller removes it.
func (x *PartIndex) Commit(ctx context.Context, c *PartClaim) error {
	return x.finish(ctx, c, stateCommitted)
}

// Abandon gives the claimed part up: it was not published, and its ids are
// free again.
func (x *PartIndex) Abandon(ctx context.Context, c *PartClaim) error {
	return x.finish(ctx, c, stateAbandoned)
}

func (x *PartIndex) finish(ctx context.Context, c *PartClaim, state string) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	err := x.setState(ctx, c.Number, state)
	if err == nil || errors.Is(err, ErrAbandoned) {
		delete(x.mine, c.Number)
	}
	return err
}

// Key is the key of part number n.
func (p *Parts) Key(n int) string { return p.prefix + p.name(n) }

// Create stores what write produces as part number n (ErrExists when the
// number is taken).
func (p *Parts) Create(ctx context.Context, n int, write func(io.Writer) error) (Info, error) {
	if p.dense {
		// A number taken out of turn would break the numbering that
		// List relies on (see probe).
		return Info{}, fmt.Errorf("%w: the parts under %s are numbered by Publish only", ErrInvalidOption, p.prefix)
	}
	return p.store.Create(ctx, p.Key(n), write)
}

// Exists reports whether part number n is stored (whole).
func (p *Parts) Exists(ctx context.Context, n int) (bool, error) {
	_, err := p.store.Stat(ctx, p.Key(n))
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// newToken names one claim: random, so no two writers share it.
func newToken() (string, error) {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("claim token: %w", err)
	}
	return hex.EncodeToString(b), nil
}
