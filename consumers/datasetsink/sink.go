// Package datasetsink persists the shards of lf.data.<dataset>.shard as the
// Parquet parts of the dataset in storage (storage.DatasetParts; locally
// <data-dir>/datasets/<name>/), with a manifest, and the ingestion rejects of
// lf.dlq.ingest.<dataset> as its rejects.jsonl. Its
// RawHandler validates the single records any NATS client publishes to
// lf.data.<dataset>.raw (with dataset/read, as ingest validates a file's) into
// shards and rejects.
//
// A fetched batch of shards becomes one part per dataset, published whole
// (storage.Parts: a number no other sink holds) before the batch is acked.
// Records are deduplicated on their id across shards, batches and runs (a
// storage.Deduper seeded with the ids of every part when a dataset is first
// touched), and each part records the shard message ids it holds, so a shard
// redelivered after a crash is recognised and not counted twice.
package datasetsink

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/rs/zerolog"

	"github.com/largeforge/largeforge/dataset"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/schemas"
	"github.com/largeforge/largeforge/storage"
)

// ErrInvalidOption is returned for a bad constructor argument.
var ErrInvalidOption = errors.New("invalid dataset sink option")

// Sink writes the datasets of a store.
type Sink struct {
	store   storage.Store
	kv      *pipeline.KV
	shared  *pipeline.KV // lf_dedupe: record ids shared by every sink; nil: this process's memory
	log     zerolog.Logger
	metrics *dataset.Metrics
	now     func() time.Time

	claimLease   time.Duration           // of lf_dedupe part claims (0: storage.DefaultClaimLease)
	afterPublish func(part string) error // tests: runs between a part's publication and its commit; an error is the sink dying there

	mu   sync.Mutex
	sets map[string]*state
}

type state struct {
	name        string // the dataset's (fixed: read without s.mu)
	man         dataset.Manifest
	base        dataset.Manifest // the manifest as last read from or merged into lf_datasets
	baseRev     uint64           // its revision there (0: none yet)
	parts       *storage.Parts
	rejectParts *storage.Parts
	dedupe      dedupe             // the record ids the parts hold (one sink: no lf_dedupe)
	index       *storage.PartIndex // the record ids of every sink's parts, in lf_dedupe
	shards      map[string]struct{}
	rejects     map[string]struct{} // ids of the rejects stored (read from the rejects objects, or written here)
	rejectsRead int                 // the number of the first rejects object not read yet
	rejectGaps  map[int]bool        // rejects numbers below rejectsRead claimed but not stored when read
	counted     map[string]struct{} // run+shard counted by this process
	marks       []string            // lf_dedupe keys of the shards counted since the last manifest merge (countedKey)
}

// dedupe is a storage.Deduper seeded with the ids of the parts read.
type dedupe interface {
	storage.Deduper
	Add(ids ...string)
}

// New returns a sink writing the datasets of store. kv, when not nil, is
// the home of each dataset's manifest, under its name (the lf_datasets
// bucket): every sink merges its changes into it (compare and set), and it
// is how `largeforge datasets`, export and waiting ingest runs read them over
// the bus. shared, when not nil, is the lf_dedupe bucket: record ids are
// claimed there, so any number of sinks may write one dataset and each
// record lands once; nil keeps them in this process (one sink only).
func New(store storage.Store, kv, shared *pipeline.KV, log zerolog.Logger, m *dataset.Metrics) (*Sink, error) {
	if store == nil {
		return nil, fmt.Errorf("%w: nil store", ErrInvalidOption)
	}
	if shared != nil && kv == nil {
		return nil, fmt.Errorf("%w: a shared dedupe bucket needs the manifests bucket (several sinks merge their manifests there)", ErrInvalidOption)
	}
	if m == nil {
		m, _ = dataset.NewMetrics(nil)
	}
	return &Sink{store: store, kv: kv, shared: shared, log: log, metrics: m, now: time.Now, sets: map[string]*state{}}, nil
}

// load returns a dataset's state, reading its parts and rejects the first
// time. A name that is not a dataset's is pipeline.Invalid; any other error
// (the store unreachable while a cluster elects a leader) is transient.
func (s *Sink) load(ctx context.Context, name string) (*state, error) {
	if st, ok := s.sets[name]; ok {
		return st, nil
	}
	if err := dataset.ValidateName(name); err != nil {
		return nil, pipeline.Invalid("dataset "+name, err)
	}
	// With the shared index (lf_dedupe) numbering the parts, they are
	// listed by their numbers, not by every object's in the store.
	var parts *storage.Parts
	var err error
	if s.shared != nil {
		parts, err = storage.IndexedDatasetParts(s.store, s.shared, name)
	} else {
		parts, err = storage.DatasetParts(s.store, name)
	}
	if err != nil {
		return nil, err
	}
	rejectParts, err := storage.DatasetRejectParts(s.store, name)
	if err != nil {
		return nil, err
	}
	var dedupe dedupe = storage.NewMemory()
	var index *storage.PartIndex
	if s.shared != nil {
		if index, err = storage.NewPartIndex(s.shared, parts, name, storage.PartIndexOptions{Lease: s.claimLease}); err != nil {
			return nil, err
		}
		dedupe = nil
	}
	st := &state{name: name, parts: parts, rejectParts: rejectParts, dedupe: dedupe, index: index, shards: map[string]struct{}{}, rejects: map[string]struct{}{}, rejectGaps: map[int]bool{}, counted: map[string]struct{}{}}
	man, rev, err := s.loadManifest(ctx, name)
	switch {
	case err == nil:
		st.man, st.base, st.baseRev = man, copyManifest(man), rev
	case dataset.IsNotExist(err):
		st.man = dataset.Manifest{Name: name, CreatedAt: s.now().UTC()}
	default:
		return nil, err
	}
	// The stored parts are the truth: a crash may have come between a
	// part's publication and the manifest's.
	list, err := parts.List(ctx)
	if err != nil {
		return nil, err
	}
	indexed := -1 // parts from this number on are in the part index, with their ids and states
	if index != nil {
		if indexed, err = index.Base(ctx); err != nil {
			return nil, err
		}
	}
	st.man.Parts = st.man.Parts[:0]
	st.man.Counts.Rows = 0
	for _, p := range list {
		meta, err := dataset.LoadPartMeta(ctx, s.store, p.Key)
		if err != nil {
			return nil, err
		}
		if n, _ := storage.PartNumber(p.Key); indexed < 0 || n < indexed {
			st.add(meta.IDs)
			for _, sh := range meta.Shards {
				st.shards[sh] = struct{}{}
			}
		}
		if st.man.Format == "" {
			st.man.Format = meta.Format
		}
		st.man.Parts = append(st.man.Parts, dataset.PartInfo{File: path.Base(p.Key), Rows: meta.Rows, Bytes: meta.Bytes, SHA256: meta.SHA256})
		st.man.Counts.Rows += meta.Rows
	}
	if err := s.readNewRejects(ctx, st); err != nil {
		return nil, err
	}
	s.sets[name] = st
	return st, nil
}

// add records the ids of a part read as held.
func (st *state) add(ids []string) {
	if st.index != nil {
		st.index.Add(ids...)
	} else {
		st.dedupe.Add(ids...)
	}
}

// hasShard reports whether a part holds the shard message id.
func (st *state) hasShard(id string) bool {
	if _, ok := st.shards[id]; ok {
		return true
	}
	return st.index != nil && st.index.HasShard(id)
}

// isRecordID reports whether id is a record id (64 hex digits); records
// without one are not persisted.
func isRecordID(id string) bool { return storage.IsRecordID(id) }

// Shards is the consume-loop handler of lf.data.*.shard.
func (s *Sink) Shards() pipeline.Handler { return shardHandler{s} }

// Rejects is the consume-loop handler of lf.dlq.ingest.*.
func (s *Sink) Rejects() pipeline.Handler { return rejectHandler{s} }

type shardHandler struct{ s *Sink }

func (h shardHandler) Handle(ctx context.Context, msgs []pipeline.Msg) []error {
	return h.s.handleShards(ctx, msgs)
}

type rejectHandler struct{ s *Sink }

func (h rejectHandler) Handle(ctx context.Context, msgs []pipeline.Msg) []error {
	return h.s.handleRejects(ctx, msgs)
}

// token returns the n-th dot-separated token of a subject.
func token(subject string, n int) string {
	parts := strings.Split(subject, ".")
	if n < len(parts) {
		return parts[n]
	}
	return ""
}

type pendingShard struct {
	idx         int
	msgID       string
	source      string
	run         string
	redelivered bool // a delivery after the first
	records     []schemas.Record
	ids         []string
}

// handleShards writes a batch's shards: each dataset's become (at most)
// one part. The sink's state is held only around the steps that read or
// change it; decoding and checking the shards, and encoding and storing a
// part claimed in the part index, run outside it, so that two batches (the
// consume loops of StartStore) overlap: one is checked, or claims its part,
// while the other's part is encoded and uploaded.
func (s *Sink) handleShards(ctx context.Context, msgs []pipeline.Msg) []error {
	errs := make([]error, len(msgs))
	groups := map[string][]int{}
	var order []string
	for i, m := range msgs {
		ds := token(m.Subject, 2)
		if _, ok := groups[ds]; !ok {
			order = append(order, ds)
		}
		groups[ds] = append(groups[ds], i)
	}
	for _, ds := range order {
		s.writeGroup(ctx, ds, msgs, groups[ds], errs)
	}
	return errs
}

// writeGroup turns one dataset's shards of a batch into (at most) one part.
func (s *Sink) writeGroup(ctx context.Context, ds string, msgs []pipeline.Msg, idx []int, errs []error) {
	s.mu.Lock()
	st, err := s.load(ctx, ds)
	var skip, counted []bool
	var adopted []map[string]bool
	if err == nil {
		counted, adopted = s.redeliveries(ctx, st, msgs, idx, errs)
		skip = skipShards(msgs, idx, st)
		for k, i := range idx {
			skip[k] = (skip[k] && adopted[k] == nil) || counted[k] || errs[i] != nil
		}
	}
	s.mu.Unlock()
	if err != nil {
		for _, i := range idx {
			errs[i] = err // invalid for a bad name; else transient (the store unreachable): redelivered
		}
		return
	}
	// The CPU of the batch, on every core, outside the sink's state: a
	// shard skipped here is still skipped below (a dataset's format and
	// the shards its parts hold are only ever added).
	checked := checkShards(msgs, idx, skip)

	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	var shards []pendingShard
	for k, i := range idx {
		if counted[k] || errs[i] != nil {
			continue // a redelivery of a shard stored and counted before (acked, counted once), or failed
		}
		m := msgs[i]
		h := m.Header
		f, err := schemas.ParseFormat(h.Get(schemas.HeaderFormat))
		if err != nil {
			errs[i] = pipeline.Invalid("shard format", err)
			continue
		}
		msgID := m.ID
		p := pendingShard{idx: i, msgID: msgID, source: h.Get(schemas.HeaderSource), run: h.Get(schemas.HeaderRun), redelivered: m.Deliveries > 1}
		if st.man.Format != "" && st.man.Format != f {
			errs[i] = s.rejectShard(ctx, st, p, f, m.Data, now)
			continue
		}
		if held := adopted[k]; held != nil && checked[k].err == nil {
			// Stored by a sink that died before counting it: its bad rows
			// count as rejected (their lines stored once), its records in
			// that part as rows, the others as duplicates.
			_, ids, err := s.verify(ctx, st, p, checked[k], now)
			if err != nil {
				errs[i] = err // transient: the shard is redelivered
				continue
			}
			var rows, dups int64
			for _, id := range ids {
				if held[id] {
					rows++
				} else {
					dups++
				}
			}
			s.countStored(st, p, rows, dups, now)
			continue
		}
		if msgID != "" && st.hasShard(msgID) {
			// Persisted before (by an earlier run, or before a crash): every
			// record of it is a duplicate.
			rows, _ := strconv.ParseInt(h.Get(schemas.HeaderRows), 10, 64)
			s.countStored(st, p, 0, rows, now)
			continue
		}
		c := checked[k]
		if c.err != nil {
			errs[i] = pipeline.Invalid("undecodable shard", c.err)
			continue
		}
		if st.man.Format == "" {
			st.man = mergeManifest(dataset.NewManifest(ds, f, now), st.man)
		}
		if p.records, p.ids, err = s.verify(ctx, st, p, c, now); err != nil {
			errs[i] = err // transient: the shard is redelivered
			continue
		}
		shards = append(shards, p)
	}
	if len(shards) == 0 {
		s.manifestOrRedeliver(ctx, st, idx, errs)
		return
	}
	var rows, dups []int64
	if st.index != nil {
		rows, dups, err = s.writeIndexed(ctx, st, shards)
	} else {
		var recs []schemas.Record
		var ids []string
		recs, ids, rows, dups, err = claimRecords(ctx, st.dedupe, shards)
		if err == nil && (len(recs) > 0 || hasShardIDs(shards)) {
			err = s.publishPart(ctx, st, shards, recs, ids)
		}
	}
	if err != nil {
		s.log.Error().Err(err).Dict("context", zerolog.Dict().Str("dataset", ds)).Msg("write part")
		for _, p := range shards {
			errs[p.idx] = err // transient: the batch is redelivered
		}
		return
	}
	for k, p := range shards {
		st.man.Counts.Duplicates += dups[k]
		s.metrics.Duplicates.WithLabelValues(ds).Add(float64(dups[k]))
		s.countShard(st, p, rows[k], dups[k], now)
	}
	s.manifestOrRedeliver(ctx, st, idx, errs)
}

// manifestOrRedeliver publishes st's manifest; when that fails (a cluster
// electing a leader, a timeout) the messages of idx not failed already get
// the error, so that they are redelivered and the publication retried: a
// redelivered shard is found stored and counted (hasShard, countShard), so
// only the manifest is written again. Acking them instead would leave their
// parts out of the manifest until some later batch of the dataset came.
func (s *Sink) manifestOrRedeliver(ctx context.Context, st *state, idx []int, errs []error) {
	err := s.publishManifest(ctx, st)
	if err == nil {
		return
	}
	for _, i := range idx {
		if errs[i] == nil {
			errs[i] = err
		}
	}
}

// claimRecords deduplicates the records of shards against the dataset and
// within the batch: it returns the new ones (claimed from d) with their ids,
// and per shard how many were new and how many duplicates.
func claimRecords(ctx context.Context, d storage.Deduper, shards []pendingShard) (recs []schemas.Record, ids []string, rows, dups []int64, err error) {
	cand, refs := candidates(shards)
	fresh, err := d.Claim(ctx, cand)
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("deduplicate: %w", err)
	}
	recs, ids, rows, dups = sortFresh(shards, cand, refs, fresh)
	return recs, ids, rows, dups, nil
}

// recordRef is a record of a batch: its shard and its index there.
type recordRef struct{ shard, rec int }

// candidates are the record ids of shards to deduplicate, with their records.
func candidates(shards []pendingShard) ([]string, []recordRef) {
	var cand []string
	var refs []recordRef
	for k, p := range shards {
		for j, id := range p.ids {
			if isRecordID(id) {
				cand = append(cand, id)
				refs = append(refs, recordRef{k, j})
			}
		}
	}
	return cand, refs
}

// sortFresh returns the new records of a batch with their ids, and per
// shard how many were new and how many duplicates.
func sortFresh(shards []pendingShard, cand []string, refs []recordRef, fresh []bool) (recs []schemas.Record, ids []string, rows, dups []int64) {
	rows, dups = make([]int64, len(shards)), make([]int64, len(shards))
	recs, ids = make([]schemas.Record, 0, len(refs)), make([]string, 0, len(refs))
	for i, r := range refs {
		if !fresh[i] {
			dups[r.shard]++
			continue
		}
		recs = append(recs, shards[r.shard].records[r.rec])
		ids = append(ids, cand[i])
		rows[r.shard]++
	}
	return recs, ids, rows, dups
}

// writeIndexed stores a batch's new records as one part claimed in the
// dataset's part index (lf_dedupe): the claim lists the part's ids, so
// every other sink (and this sink's other batches) sees them before it
// claims a part of its own. The part is then created under the claimed
// number and committed, with s.mu released (held by the caller, and held
// again on return): encoding and uploading it overlap another batch's
// work. A part that could not be stored is abandoned, which frees its ids.
func (s *Sink) writeIndexed(ctx context.Context, st *state, shards []pendingShard) (rows, dups []int64, err error) {
	cand, refs := candidates(shards)
	fresh, claim, err := st.index.Claim(ctx, cand, shardIDsOf(shards))
	if err != nil {
		return nil, nil, fmt.Errorf("deduplicate: %w", err)
	}
	recs, ids, rows, dups := sortFresh(shards, cand, refs, fresh)
	if len(recs) == 0 && len(claim.Shards) == 0 {
		return rows, dups, st.index.Abandon(ctx, claim) // nothing to store
	}
	format, afterPublish := st.man.Format, s.afterPublish
	s.mu.Unlock()
	info, err := s.storeClaimed(ctx, st, claim, format, recs, ids, afterPublish)
	s.mu.Lock()
	if err != nil {
		return nil, nil, err
	}
	s.notePart(st, info, len(shards))
	return rows, dups, nil
}

// storeClaimed creates the claimed part and commits its claim; it touches
// nothing of the sink's state but the part index (safe on its own).
func (s *Sink) storeClaimed(ctx context.Context, st *state, claim *storage.PartClaim, format schemas.Format, recs []schemas.Record, ids []string,
	afterPublish func(string) error) (dataset.PartInfo, error) {
	info, err := dataset.CreatePart(ctx, st.parts, claim.Number, format, recs, ids, claim.Shards)
	if err != nil {
		return info, errors.Join(err, st.index.Abandon(context.WithoutCancel(ctx), claim))
	}
	if afterPublish != nil {
		if err := afterPublish(claim.Key); err != nil {
			return info, err // the sink died here
		}
	}
	if err := st.index.Commit(ctx, claim); err != nil {
		if errors.Is(err, storage.ErrAbandoned) {
			// Another sink gave this claim up for dead: the part must not count.
			return info, err
		}
		// The part is stored; its claim stays open until another sink that
		// needs its ids finds the part and commits it.
		s.log.Error().Err(err).Dict("context", zerolog.Dict().Str("dataset", st.name).Str("part", info.File)).Msg("commit part claim")
	}
	return info, nil
}

// shardIDsOf are the message ids of shards (those that have one).
func shardIDsOf(shards []pendingShard) []string {
	var ids []string
	for _, p := range shards {
		if p.msgID != "" {
			ids = append(ids, p.msgID)
		}
	}
	return ids
}

func hasShardIDs(shards []pendingShard) bool {
	for _, p := range shards {
		if p.msgID != "" {
			return true
		}
	}
	return false
}

// publishPart publishes the batch's new records as the dataset's next part,
// or gives their ids back to the deduper when it cannot.
func (s *Sink) publishPart(ctx context.Context, st *state, shards []pendingShard, recs []schemas.Record, ids []string) error {
	shardIDs := shardIDsOf(shards)
	info, err := dataset.PublishPart(ctx, st.parts, st.man.Format, recs, ids, shardIDs)
	if err != nil {
		return errors.Join(err, st.dedupe.Release(ctx, ids))
	}
	if err := commit(ctx, st.dedupe, ids); err != nil {
		// The part is published: its records are stored. Their claims stay
		// uncommitted, which holds them until the lease ends.
		s.log.Error().Err(err).Dict("context", zerolog.Dict().Str("dataset", st.man.Name).Str("part", info.File)).Msg("commit record claims")
	}
	s.notePart(st, info, len(shards))
	return nil
}

// notePart adds a part stored to the dataset's state and manifest.
func (s *Sink) notePart(st *state, info dataset.PartInfo, shards int) {
	for _, id := range info.Shards {
		st.shards[id] = struct{}{}
	}
	st.man.Parts = append(st.man.Parts, info)
	st.man.Counts.Rows += info.Rows
	ds := st.man.Name
	s.metrics.Parts.WithLabelValues(ds).Inc()
	s.metrics.Rows.WithLabelValues(ds).Add(float64(info.Rows))
	s.log.Info().Dict("context", zerolog.Dict().Str("dataset", ds).Str("part", info.File).Int64("rows", info.Rows).Int("shards", shards)).Msg("part written")
}

// verify checks each row of a shard as ingest checks a record (the
// dictionary's schema, schemas.Record.Validate) and that its id is the
// schemas.RecordID of its canonical JSON: whoever may publish on
// lf.data.<ds>.shard cannot store an invalid row, nor put a row in place of
// the record whose id it claims. Each bad row becomes a reject (rejects.jsonl,
// the manifest's counts) with its rule; the good ones are returned.
func (s *Sink) verify(ctx context.Context, st *state, p pendingShard, c checkedShard, now time.Time) ([]schemas.Record, []string, error) {
	ds := st.man.Name
	recs, ids := c.recs, c.ids
	var lines []RejectLine
	keep := 0
	for j, r := range recs {
		bad := c.bad[j]
		if bad == nil {
			recs[keep], ids[keep] = r, ids[j]
			keep++
			continue
		}
		// Stable across redeliveries: the claimed id and the content.
		rid := ds + "/shard/" + schemas.RecordID(append([]byte(bad.claimed+"\x00"), bad.canon...))
		if _, done := st.rejects[rid]; done {
			continue
		}
		orig := string(bad.canon)
		lines = append(lines, RejectLine{ID: rid, Source: p.source, Field: bad.field, Rule: bad.rule, Original: &orig, Time: now.UTC(),
			Error: fmt.Sprintf("shard %s row %d: %s", p.msgID, j+1, bad.msg)})
	}
	if err := s.appendRejects(ctx, st, lines, p.redelivered); err != nil {
		return nil, nil, err
	}
	for _, l := range lines {
		s.noteReject(st, l, p.run, now)
		s.metrics.Rejected.WithLabelValues(ds, l.Rule).Inc()
	}
	if len(lines) > 0 {
		s.log.Warn().Dict("context", zerolog.Dict().Str("dataset", ds).Str("source", p.source).Str("shard", p.msgID).Int("rows", len(lines))).
			Msg("shard rows rejected: invalid or not matching their ids")
	}
	return recs[:keep], ids[:keep], nil
}

// checkedShard is a shard decoded, its rows checked: bad[j] is why row j
// is refused (nil: it is good, and ids[j] is its id).
type checkedShard struct {
	recs []schemas.Record
	ids  []string
	bad  map[int]*badRow
	err  error // undecodable
}

type badRow struct {
	claimed, field, rule, msg string
	canon                     []byte
}

// redeliveries looks at the shards of msgs[idx] redelivered (a delivery
// after the first: an ack lost, or a sink gone before acking). A shard
// whose counts a manifest merge already holds (its countedKey is in
// lf_dedupe) is acked and counted no more: counted[k] is set (another sink
// than the first, or a restarted one, would count it again). A shard that
// a committed part holds without such a mark was stored by a sink that died
// before its manifest (a part in flight is waited for, and committed when
// its sink died after storing it): the part is added to this sink's
// manifest (adoptPart; a merge keeps each part once), which no sink would
// otherwise do until one read the dataset's parts afresh, and the shard's
// records in it count as rows (adopted[k] holds its record ids). The caller
// holds s.mu.
func (s *Sink) redeliveries(ctx context.Context, st *state, msgs []pipeline.Msg, idx []int, errs []error) (counted []bool, adopted []map[string]bool) {
	counted, adopted = make([]bool, len(idx)), make([]map[string]bool, len(idx))
	if st.index == nil {
		return counted, adopted
	}
	held := map[int]map[string]bool{} // the record ids of each part adopted: one read of a part for all its shards
	for k, i := range idx {
		m := msgs[i]
		if m.ID == "" || m.Deliveries <= 1 {
			continue
		}
		var err error
		if counted[k], adopted[k], err = s.redelivered(ctx, st, m, held); err != nil {
			errs[i] = err // transient: redelivered again; the batch's other shards go on
		}
	}
	return counted, adopted
}

// redelivered is redeliveries for one shard message m: whether its counts
// landed, else the record ids of the part that holds it (nil: none), from
// held when adopted for another shard already.
func (s *Sink) redelivered(ctx context.Context, st *state, m pipeline.Msg, held map[int]map[string]bool) (bool, map[string]bool, error) {
	done, err := s.shared.LeaderHas(ctx, countedKey(st.name, m.Header.Get(schemas.HeaderRun), m.ID))
	if err != nil || done {
		return done, nil, err
	}
	n, ok, err := st.index.ShardPart(ctx, m.ID)
	if err != nil || !ok {
		return false, nil, err
	}
	if ids, ok := held[n]; ok {
		return false, ids, nil
	}
	ids, err := s.adoptPart(ctx, st, n)
	if err == nil {
		held[n] = ids
	}
	return false, ids, err
}

// adoptPart adds part n, committed by a sink that died before merging its
// manifest, to the dataset's manifest (a merge keeps each part once), and
// returns the record ids it holds.
func (s *Sink) adoptPart(ctx context.Context, st *state, n int) (map[string]bool, error) {
	key := st.parts.Key(n)
	file := path.Base(key)
	meta, err := dataset.LoadPartMeta(ctx, s.store, key)
	if err != nil {
		return nil, err
	}
	held := make(map[string]bool, len(meta.IDs))
	for _, id := range meta.IDs {
		held[id] = true
	}
	for _, p := range st.man.Parts {
		if p.File == file {
			return held, nil
		}
	}
	st.man.Parts = append(st.man.Parts, dataset.PartInfo{File: file, Rows: meta.Rows, Bytes: meta.Bytes, SHA256: meta.SHA256})
	st.man.Counts.Rows += meta.Rows
	s.log.Warn().Dict("context", zerolog.Dict().Str("dataset", st.name).Str("part", file).Int64("rows", meta.Rows)).
		Msg("part of a sink gone before its manifest added to the manifest")
	return held, nil
}

// skipShards marks the shards of msgs[idx] the sink will not decode:
// another format than the dataset's, or persisted before.
func skipShards(msgs []pipeline.Msg, idx []int, st *state) []bool {
	skip := make([]bool, len(idx))
	for k, i := range idx {
		m := msgs[i]
		f, err := schemas.ParseFormat(m.Header.Get(schemas.HeaderFormat))
		skip[k] = err != nil || (st.man.Format != "" && st.man.Format != f) || (m.ID != "" && st.hasShard(m.ID))
	}
	return skip
}

// checkShards decodes the shards of msgs[idx] of a dataset and checks
// their rows (the CPU of a batch) on every core; those skip marks are left
// empty.
func checkShards(msgs []pipeline.Msg, idx []int, skip []bool) []checkedShard {
	out := make([]checkedShard, len(idx))
	var wg sync.WaitGroup
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	for k, i := range idx {
		if skip[k] {
			continue
		}
		m := msgs[i]
		f, _ := schemas.ParseFormat(m.Header.Get(schemas.HeaderFormat))
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			out[k] = checkShard(f, m.Data)
		}()
	}
	wg.Wait()
	return out
}

// checkShard checks each row as ingest checks a record and that its id is
// the schemas.RecordID of its canonical JSON.
func checkShard(f schemas.Format, data []byte) checkedShard {
	recs, ids, err := dataset.DecodeShard(f, data)
	if err != nil {
		return checkedShard{err: err}
	}
	c := checkedShard{recs: recs, ids: ids}
	var canon []byte // reused: only a bad row keeps a copy
	for j, r := range recs {
		canon = r.AppendCanonicalJSON(canon[:0])
		id := schemas.RecordID(canon)
		var field, rule, msg string
		if err := r.ValidateCanonical(canon); err != nil {
			field, rule, msg = "", "invalid", err.Error()
			var ve *schemas.ValidationError
			if errors.As(err, &ve) {
				field, rule = ve.Field, ve.Rule
			}
		} else if ids[j] != id {
			field, rule = "id", schemas.RuleRecordID
			msg = fmt.Sprintf("%s: the row's id %q is not the SHA-256 of its canonical JSON (%s)", rule, clip(ids[j], 80), id)
		}
		if rule != "" {
			if c.bad == nil {
				c.bad = map[int]*badRow{}
			}
			c.bad[j] = &badRow{claimed: ids[j], field: field, rule: rule, msg: msg, canon: bytes.Clone(canon)}
		}
		ids[j] = id
	}
	return c
}

// clip cuts s to at most n bytes, for messages that quote what a client sent.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}

// rejectShard records every record of a shard whose format is not the
// dataset's as a reject with rule format, in rejects.jsonl and the manifest,
// rather than dead-lettering the shard: a publisher that raced ingest's check
// of the dataset's format loses no row without a trace. Shards carry no line
// numbers; each reject holds the record's canonical JSON and id.
func (s *Sink) rejectShard(ctx context.Context, st *state, p pendingShard, f schemas.Format, data []byte, now time.Time) error {
	recs, ids, err := dataset.DecodeShard(f, data)
	if err != nil {
		return pipeline.Invalid("undecodable shard", err)
	}
	var lines []RejectLine
	for j, r := range recs {
		id := st.man.Name + "/format/" + ids[j]
		if _, done := st.rejects[id]; done {
			continue
		}
		orig := string(r.CanonicalJSON())
		lines = append(lines, RejectLine{ID: id, Source: p.source, Rule: schemas.RuleFormat, Original: &orig, Time: now.UTC(),
			Error: fmt.Sprintf("record %s: %s: dataset %s holds %s records; this record is %s (ingest it into a dataset of its own)",
				ids[j], schemas.RuleFormat, st.man.Name, st.man.Format, f)})
	}
	if err := s.appendRejects(ctx, st, lines, p.redelivered); err != nil {
		return err // transient: the shard is redelivered
	}
	for _, l := range lines {
		s.noteReject(st, l, p.run, now)
	}
	s.metrics.Rejected.WithLabelValues(st.man.Name, schemas.RuleFormat).Add(float64(len(lines)))
	s.countShard(st, p, 0, 0, now)
	s.log.Warn().Dict("context", zerolog.Dict().Str("dataset", st.man.Name).Str("source", p.source).Int("rows", len(recs))).
		Msgf("shard of %s records rejected: the dataset holds %s records", f, st.man.Format)
	return nil
}

// appendRejects stores lines as the dataset's next rejects-NNNNN.jsonl
// object. Lines of redelivered messages (redelivered) are stored unless
// another sink stored them since this one last read the rejects (it wrote
// them, then failed or died before acking): each line is stored once. The
// caller counts them all (unless a merge counted them, their sink did not).
func (s *Sink) appendRejects(ctx context.Context, st *state, lines []RejectLine, redelivered bool) error {
	if len(lines) == 0 {
		return nil
	}
	if redelivered {
		if err := s.readNewRejects(ctx, st); err != nil {
			return err
		}
	}
	var buf []byte
	for _, l := range lines {
		if _, done := st.rejects[l.ID]; done {
			continue
		}
		data, err := json.Marshal(l)
		if err != nil {
			return err
		}
		buf = append(append(buf, data...), '\n')
	}
	if len(buf) == 0 {
		return nil
	}
	info, err := st.rejectParts.Publish(ctx, func(w io.Writer) error { _, err := w.Write(buf); return err })
	if err != nil {
		return fmt.Errorf("store rejects of %s: %w", st.man.Name, err)
	}
	if n, ok := st.rejectParts.Number(info.Key); ok && n == st.rejectsRead {
		st.rejectsRead = n + 1 // its ids are this sink's own
	}
	return nil
}

// readNewRejects reads the ids of the dataset's rejects objects stored
// since the sink last read them (by any sink; listed by number), and of
// those numbered below that were claimed but not stored when it last read
// (an upload then still running).
func (s *Sink) readNewRejects(ctx context.Context, st *state) error {
	for n := range st.rejectGaps {
		stored, err := st.rejectParts.Exists(ctx, n)
		if err != nil {
			return err
		}
		if !stored {
			continue
		}
		if err := readRejectIDs(ctx, s.store, st.rejectParts.Key(n), st.rejects); err != nil {
			return err
		}
		delete(st.rejectGaps, n)
	}
	list, err := st.rejectParts.ListFrom(ctx, st.rejectsRead)
	if err != nil {
		return err
	}
	for _, in := range list {
		if err := readRejectIDs(ctx, s.store, in.Key, st.rejects); err != nil {
			return err
		}
		n, ok := st.rejectParts.Number(in.Key)
		if !ok {
			continue
		}
		for gap := st.rejectsRead; gap < n; gap++ {
			st.rejectGaps[gap] = true
		}
		st.rejectsRead = n + 1
	}
	return nil
}

// noteReject counts a reject written to rejects.jsonl in the dataset's state
// and manifest, under its rule and its run.
func (s *Sink) noteReject(st *state, l RejectLine, run string, now time.Time) {
	st.rejects[l.ID] = struct{}{}
	st.man.AddReject(l.Rule)
	st.man.Source(l.Source, run, now).Rejected++
}

func mergeManifest(fresh, old dataset.Manifest) dataset.Manifest {
	fresh.Parts, fresh.Counts, fresh.Sources = old.Parts, old.Counts, old.Sources
	if !old.CreatedAt.IsZero() {
		fresh.CreatedAt = old.CreatedAt
	}
	return fresh
}

// countShard adds one shard to its run's entry, once per process and run; it
// reports whether it counted.
func (s *Sink) countShard(st *state, p pendingShard, rows, dups int64, now time.Time) bool {
	key := p.run + "\x00" + p.msgID
	if _, ok := st.counted[key]; ok && p.msgID != "" {
		return false
	}
	st.counted[key] = struct{}{}
	if st.index != nil && p.msgID != "" {
		st.marks = append(st.marks, countedKey(st.name, p.run, p.msgID))
	}
	src := st.man.Source(p.source, p.run, now)
	src.Shards++
	src.Rows += rows
	src.Duplicates += dups
	return true
}

// countStored counts a shard whose records were stored before this
// message (rows of them now counted, dups duplicates), once per process.
func (s *Sink) countStored(st *state, p pendingShard, rows, dups int64, now time.Time) {
	if s.countShard(st, p, rows, dups, now) {
		st.man.Counts.Duplicates += dups
		s.metrics.Duplicates.WithLabelValues(st.name).Add(float64(dups))
	}
}

// deadLetterRun stands for the run in the countedKey of a dead-lettered
// reject (no run holds a NUL).
const deadLetterRun = "\x00dead-letter"

// countedKey is the lf_dedupe key that says a manifest merge holds the
// counts of shard msgID of ingest run run of dataset ds: written after the
// merge (writeMarks), read when the shard is redelivered (redeliveries).
func countedKey(ds, run, msgID string) string {
	sum := sha256.Sum256([]byte(run + "\x00" + msgID))
	return ds + "/counted/" + hex.EncodeToString(sum[:16])
}

// markWait bounds the writing of a merge's markers (writeMarks).
const markWait = 30 * time.Second

// writeMarks writes the countedKey of each shard (and dead-lettered
// reject) counted since the last merge, now that a merge holds their
// counts, even when the handler is stopping. When that fails the keys are
// kept for the next merge, and logged: a redelivery meanwhile to another
// sink would count them again.
func (s *Sink) writeMarks(ctx context.Context, st *state) {
	if len(st.marks) == 0 || s.shared == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), markWait)
	defer cancel()
	if _, err := s.shared.CreateMany(ctx, st.marks, []byte("1")); err != nil {
		s.log.Warn().Err(err).Dict("context", zerolog.Dict().Str("dataset", st.name)).Int("shards", len(st.marks)).Msg("mark shards counted")
		return
	}
	st.marks = st.marks[:0]
}

// manifestRetries bounds the compare-and-set rounds of a manifest merge.
const manifestRetries = 20

// publishManifest merges this sink's changes to the manifest since it last
// read it into the one in lf_datasets (compare and set: other sinks merge
// theirs) and, where the store has files, writes the merged manifest.json.
// Without a bucket the manifest is only stored.
func (s *Sink) publishManifest(ctx context.Context, st *state) error {
	st.man.UpdatedAt = s.now().UTC()
	logErr := func(err error, msg string) error {
		s.log.Error().Err(err).Dict("context", zerolog.Dict().Str("dataset", st.man.Name)).Msg(msg)
		return fmt.Errorf("%s %s: %w", msg, st.man.Name, err)
	}
	store := s.store
	if s.kv != nil {
		if err := s.mergeManifest(ctx, st); err != nil {
			return logErr(err, "publish manifest")
		}
		s.writeMarks(ctx, st)
		store = localCopy(s.store)
		if store == nil {
			return nil // no files: the manifest lives in lf_datasets only
		}
	}
	if err := dataset.SaveManifest(ctx, store, st.man); err != nil {
		return logErr(err, "write manifest")
	}
	return nil
}

// localCopy is the store's files on this machine: a Local, a Mirror's
// copy, or nil.
func localCopy(s storage.Store) storage.Store {
	switch s := s.(type) {
	case *storage.Local:
		return s
	case *storage.Mirror:
		return s.Local()
	}
	return nil
}

// mergeManifest applies st.man's changes since st.base to the manifest in
// the bucket, retrying when another sink wrote in between.
//
// A write whose reply was lost (a timeout while the cluster elects a
// leader, a publish retried after it landed) may still have landed: the
// manifest read back before merging again is compared with what was sent,
// so that this sink's changes are never added twice.
func (s *Sink) mergeManifest(ctx context.Context, st *state) error {
	var sent dataset.Manifest
	var sentData []byte
	landed := func(raw []byte, rev uint64) bool {
		if sentData == nil || !bytes.Equal(raw, sentData) {
			return false
		}
		st.man, st.base, st.baseRev = sent, copyManifest(sent), rev
		return true
	}
	for range manifestRetries {
		cur, raw, rev, err := s.loadManifestRaw(ctx, st.man.Name)
		if err != nil && !dataset.IsNotExist(err) {
			return err
		}
		if landed(raw, rev) {
			return nil
		}
		merged := dataset.MergeManifest(cur, st.base, st.man)
		data, err := json.Marshal(merged)
		if err != nil {
			return err
		}
		sent, sentData = merged, data
		if rev == 0 {
			rev, err = s.kv.Create(ctx, merged.Name, data)
		} else {
			rev, err = s.kv.Update(ctx, merged.Name, data, rev)
		}
		if errors.Is(err, pipeline.ErrKeyExists) || errors.Is(err, pipeline.ErrWrongRevision) {
			continue
		}
		if err != nil {
			if _, raw, rev, rerr := s.loadManifestRaw(ctx, merged.Name); rerr == nil && landed(raw, rev) {
				return nil
			}
			return err
		}
		st.man, st.base, st.baseRev = merged, copyManifest(merged), rev
		return nil
	}
	return fmt.Errorf("manifest %s: %w: %d sinks' writes in a row", st.man.Name, pipeline.ErrWrongRevision, manifestRetries)
}

// loadManifest reads a dataset's manifest: from the bucket when there is
// one (with its revision), else from the store.
func (s *Sink) loadManifest(ctx context.Context, name string) (dataset.Manifest, uint64, error) {
	if s.kv != nil {
		return s.loadManifestKV(ctx, name)
	}
	m, err := dataset.LoadManifest(ctx, s.store, name)
	return m, 0, err
}

// loadManifestKV reads name's manifest from the bucket; a missing one is
// an error for which dataset.IsNotExist holds, with revision 0.
func (s *Sink) loadManifestKV(ctx context.Context, name string) (dataset.Manifest, uint64, error) {
	m, _, rev, err := s.loadManifestRaw(ctx, name)
	return m, rev, err
}

// loadManifestRaw is loadManifestKV with the bytes stored.
func (s *Sink) loadManifestRaw(ctx context.Context, name string) (dataset.Manifest, []byte, uint64, error) {
	e, err := s.kv.Get(ctx, name)
	if errors.Is(err, pipeline.ErrKeyNotFound) {
		return dataset.Manifest{}, nil, 0, fmt.Errorf("%w: manifest %s", storage.ErrNotFound, name)
	}
	if err != nil {
		return dataset.Manifest{}, nil, 0, err
	}
	var m dataset.Manifest
	if err := json.Unmarshal(e.Value, &m); err != nil {
		return dataset.Manifest{}, nil, 0, fmt.Errorf("manifest %s in %s: %w", name, s.kv.Name(), err)
	}
	return m, e.Value, e.Revision, nil
}

func copyManifest(m dataset.Manifest) dataset.Manifest {
	return dataset.MergeManifest(dataset.Manifest{}, dataset.Manifest{}, m)
}

// commit makes the claims of a published part's ids final, retrying a few
// times: a claim left uncommitted holds its ids until its lease ends.
func commit(ctx context.Context, d storage.Deduper, ids []string) error {
	var err error
	for range 3 {
		if err = d.Commit(ctx, ids); err == nil {
			return nil
		}
	}
	return err
}

// RejectLine is one line of rejects.jsonl.
type RejectLine struct {
	ID             string    `json:"id"`
	Source         string    `json:"source"`
	Line           int64     `json:"line"`
	Field          string    `json:"field"`
	Rule           string    `json:"rule"`
	Error          string    `json:"error"`
	Original       *string   `json:"original,omitempty"`        // the original bytes, when they are valid UTF-8
	OriginalBase64 []byte    `json:"original_base64,omitempty"` // otherwise, base64
	Truncated      bool      `json:"truncated,omitempty"`
	Time           time.Time `json:"time"`
}

func readRejectIDs(ctx context.Context, store storage.Store, key string, into map[string]struct{}) error {
	f, _, err := store.Open(ctx, key)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<16), 4<<20)
	for sc.Scan() {
		var l struct {
			ID string `json:"id"`
		}
		if json.Unmarshal(sc.Bytes(), &l) == nil && l.ID != "" {
			into[l.ID] = struct{}{}
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read rejects %s: %w", key, err)
	}
	return nil
}

func (s *Sink) handleRejects(ctx context.Context, msgs []pipeline.Msg) []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	errs := make([]error, len(msgs))
	// The lines of each dataset touched, written with one append and sync.
	type batch struct {
		lines []RejectLine
		runs  []string
		idx   []int // the messages of lines
		all   []int // every message of the dataset, for a manifest not published
		ids   map[string]struct{}
		// redelivered: a message of lines is delivered again
		redelivered bool
	}
	batches := map[*state]*batch{}
	var order []*state
	now := s.now()
	for i, m := range msgs {
		ds := token(m.Subject, 3)
		st, err := s.load(ctx, ds)
		if err != nil {
			errs[i] = err // invalid for a bad name; else transient: redelivered
			continue
		}
		var rec pipeline.DLQRecord
		if err := json.Unmarshal(m.Data, &rec); err != nil {
			errs[i] = pipeline.Invalid("undecodable reject record", err)
			continue
		}
		b := batches[st]
		if b == nil {
			b = &batch{ids: map[string]struct{}{}}
			batches[st] = b
			order = append(order, st)
		}
		b.all = append(b.all, i)
		id := m.ID
		if id == "" {
			id = fmt.Sprintf("%s/seq/%s", ds, strconv.FormatUint(m.Sequence, 10))
		}
		_, done := st.rejects[id]
		_, pending := b.ids[id]
		if done || pending {
			continue
		}
		if m.Deliveries > 1 && st.index != nil {
			// Counted by a merge already (its ack lost)?
			if counted, err := s.shared.LeaderHas(ctx, countedKey(ds, deadLetterRun, id)); err != nil || counted {
				errs[i] = err
				continue
			}
		}
		first := func(k string) string {
			if v := rec.Headers[k]; len(v) > 0 {
				return v[0]
			}
			return ""
		}
		line, _ := strconv.ParseInt(first(schemas.HeaderLine), 10, 64)
		rl := RejectLine{ID: id, Source: first(schemas.HeaderSource), Line: line, Field: first(schemas.HeaderField),
			Rule: first(schemas.HeaderRule), Error: rec.Reason, Truncated: rec.Truncated, Time: rec.Time}
		if rl.Rule == "" {
			rl.Rule = "invalid"
		}
		if utf8.Valid(rec.Data) {
			o := string(rec.Data)
			rl.Original = &o
		} else {
			rl.OriginalBase64 = rec.Data
		}
		b.ids[id] = struct{}{}
		b.lines, b.runs, b.idx = append(b.lines, rl), append(b.runs, first(schemas.HeaderRun)), append(b.idx, i)
		b.redelivered = b.redelivered || m.Deliveries > 1
	}
	for _, st := range order {
		b := batches[st]
		if err := s.appendRejects(ctx, st, b.lines, b.redelivered); err != nil {
			for _, i := range b.idx {
				errs[i] = err // transient: redelivered, and not counted twice (ids)
			}
			continue
		}
		for k, l := range b.lines {
			s.noteReject(st, l, b.runs[k], now)
			st.marks = append(st.marks, countedKey(st.name, deadLetterRun, l.ID))
		}
		s.manifestOrRedeliver(ctx, st, b.all, errs)
	}
	return errs
}
