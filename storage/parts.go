package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/largeforge/largeforge/pipeline"
)

// Parts publishes the immutable parts of one collection (a dataset, a job's
// results): objects named <prefix>part-NNNNN.parquet, numbered in the order
// they are published. Each number is taken with Store.Create; when another
// writer took it first the next free one is taken, so parts of several
// writers at once never collide and every part stays readable by its name.
// A Parts is safe for concurrent use.
type Parts struct {
	store  Store
	prefix string
	digits int
	base   string // "part-"
	ext    string // ".parquet"
	// dense: only Publish numbers the parts, so every number up to the
	// highest taken is claimed (see probe).
	dense bool
	// index: the part index (lf_dedupe) that numbers a dataset's parts
	// from its base on (see probeIndexed); nil when not known.
	index *pipeline.KV
	coll  string // the index's collection and "/"

	mu      sync.Mutex
	next    int
	scanned bool
}

// Part name widths: dataset parts are part-00000.parquet, job parts
// part-000000.parquet (as they always were).
const (
	datasetPartDigits = 5
	jobPartDigits     = 6
	partBase          = "part-"
	partExt           = ".parquet"
	rejectsBase       = "rejects-"
	rejectsExt        = ".jsonl"
)

// maxCollisions bounds the numbers Publish tries before it gives up.
const maxCollisions = 1000

// skipEvery is how many numbers in a row Publish finds taken before it
// lists the parts to go past them all.
const skipEvery = 8

// DatasetParts are the parts of dataset name.
func DatasetParts(s Store, name string) (*Parts, error) {
	return newParts(s, Dataset(name), datasetPartDigits, partBase, partExt)
}

// IndexedDatasetParts are the parts of dataset name numbered by its part
// index in kv (lf_dedupe, see PartIndex): in an object store they are
// listed by their numbers, reading this dataset's objects and index
// entries only, instead of every object's metadata in the bucket.
func IndexedDatasetParts(s Store, kv *pipeline.KV, name string) (*Parts, error) {
	if kv == nil {
		return nil, fmt.Errorf("%w: nil part index bucket", ErrInvalidOption)
	}
	if !kvKeyRE.MatchString(name) {
		return nil, fmt.Errorf("%w: collection %q", ErrInvalidKey, name)
	}
	p, err := DatasetParts(s, name)
	if p != nil {
		p.index, p.coll = kv, name+"/"
	}
	return p, err
}

// DatasetRejectParts are the rejects of dataset name: immutable JSONL
// objects rejects-NNNNN.jsonl, one per batch of rejected records, numbered
// by Publish only (so listed by their numbers, see probe).
func DatasetRejectParts(s Store, name string) (*Parts, error) {
	p, err := newParts(s, Dataset(name), datasetPartDigits, rejectsBase, rejectsExt)
	if p != nil {
		p.dense = true
	}
	return p, err
}

// JobParts are the results parts of batch job job.
func JobParts(s Store, job string) (*Parts, error) {
	p, err := newParts(s, Job(job)+"parts/", jobPartDigits, partBase, partExt)
	if p != nil {
		p.dense = true
	}
	return p, err
}

// DatasetPartName is the file name of a dataset's part number n.
func DatasetPartName(n int) string {
	return fmt.Sprintf("%s%0*d%s", partBase, datasetPartDigits, n, partExt)
}

func (p *Parts) name(n int) string { return fmt.Sprintf("%s%0*d%s", p.base, p.digits, n, p.ext) }

func newParts(s Store, prefix string, digits int, base, ext string) (*Parts, error) {
	if s == nil {
		return nil, fmt.Errorf("%w: nil store", ErrInvalidOption)
	}
	if _, err := elements(prefix, true); err != nil {
		return nil, err
	}
	return &Parts{store: s, prefix: prefix, digits: digits, base: base, ext: ext}, nil
}

// Publish stores what write produces as the next part and returns it.
// write may run more than once (once per number already taken), so it must
// be repeatable.
func (p *Parts) Publish(ctx context.Context, write func(io.Writer) error) (Info, error) {
	if p.index != nil {
		// Its part index numbers an indexed dataset's parts (and holds
		// their record ids): a number taken here would be in neither.
		return Info{}, fmt.Errorf("%w: the parts under %s are numbered by their part index (PartIndex.Claim, then Create)", ErrInvalidOption, p.prefix)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.scanned {
		if err := p.skipTaken(ctx); err != nil {
			return Info{}, err
		}
		p.scanned = true
	}
	for n := range maxCollisions {
		if err := ctx.Err(); err != nil {
			return Info{}, err
		}
		info, err := p.store.Create(ctx, p.prefix+p.name(p.next), write)
		if err == nil {
			p.next++
			return info, nil
		}
		if !errors.Is(err, ErrExists) {
			return Info{}, fmt.Errorf("publish part: %w", err)
		}
		// Another writer took the number: try the next, and after
		// skipEvery of them go past every number taken now (a List
		// asks about every number of the collection, or reads the
		// store's whole index; a writer beside this one is seldom far
		// ahead).
		p.next++
		if (n+1)%skipEvery == 0 {
			if err := p.skipTaken(ctx); err != nil {
				return Info{}, err
			}
		}
	}
	return Info{}, fmt.Errorf("publish part under %s: %w: %d numbers taken meanwhile", p.prefix, ErrExists, maxCollisions)
}

// skipTaken moves next past the highest part number stored.
func (p *Parts) skipTaken(ctx context.Context) error {
	parts, err := p.List(ctx)
	if err != nil {
		return err
	}
	if n := len(parts); n > 0 {
		last, _ := numbered(parts[n-1].Key, p.base, p.ext)
		p.next = max(p.next, last+1)
	}
	return nil
}

// List returns the parts stored, in number order.
func (p *Parts) List(ctx context.Context) ([]Info, error) { return p.ListFrom(ctx, 0) }

// ListFrom returns the parts stored numbered first or above, in number
// order: a reader that has met every part below first asks about the
// others only.
func (p *Parts) ListFrom(ctx context.Context, first int) ([]Info, error) {
	o := objectsOf(p.store)
	if o != nil && p.dense {
		return p.probe(ctx, o, max(first, 0))
	}
	if o != nil && p.index != nil {
		raw, found, err := p.index.LeaderGet(ctx, indexBaseKey(p.coll))
		if err != nil {
			return nil, fmt.Errorf("list parts under %s: %w", p.prefix, err)
		}
		if found { // else no part was claimed in the index yet: List
			base, err := strconv.Atoi(string(raw))
			if err != nil {
				return nil, fmt.Errorf("list parts under %s: index base %q: %w", p.prefix, raw, err)
			}
			return p.probeIndexed(ctx, o, max(first, 0), base)
		}
	}
	return p.listAll(ctx, first)
}

// listAll lists the parts numbered first or above through the store's
// List.
func (p *Parts) listAll(ctx context.Context, first int) ([]Info, error) {
	all, err := p.store.List(ctx, p.prefix+p.base)
	if err != nil {
		return nil, err
	}
	var parts []Info
	for _, in := range all {
		if n, ok := numbered(in.Key, p.base, p.ext); ok && n >= first && path.Dir(in.Key)+"/" == p.prefix {
			parts = append(parts, in)
		}
	}
	sort.SliceStable(parts, func(i, j int) bool {
		a, _ := numbered(parts[i].Key, p.base, p.ext)
		b, _ := numbered(parts[j].Key, p.base, p.ext)
		return a < b
	})
	return parts, nil
}

// Number is the number of one of these parts' keys (or file names).
func (p *Parts) Number(key string) (int, bool) { return numbered(key, p.base, p.ext) }

// PartNumber is the number of a part's key (or file name).
func PartNumber(key string) (int, bool) { return numbered(key, partBase, partExt) }

// numbered is the number of key named base, digits, ext.
func numbered(key, base, ext string) (int, bool) {
	digits, ok := strings.CutPrefix(path.Base(key), base)
	if !ok {
		return 0, false
	}
	if digits, ok = strings.CutSuffix(digits, ext); !ok || digits == "" {
		return 0, false
	}
	n, err := strconv.Atoi(digits)
	return n, err == nil && n >= 0
}

// probeWindow is how many part numbers probe asks about at once.
const probeWindow = 32

// probe lists the parts of a dense collection in an object store by their
// numbers instead of by the store's List, which reads the metadata of every
// object in the bucket (every job's parts, every dataset): it asks about
// this collection's parts only. Publish takes a number only once every
// number below it is claimed (by a writer that found it taken or stored
// it), so the parts are the objects of numbers from, from+1, ... up to the
// first number nobody has claimed; a claimed number without an object is a
// part whose upload did not finish (or still runs), left out as List leaves
// it out. Both reads go to the streams' leaders: a part acknowledged before
// the probe is never missed.
func (p *Parts) probe(ctx context.Context, o *Objects, from int) ([]Info, error) {
	return p.probeWindows(from,
		func(n int) (Info, error) { return o.Stat(ctx, p.Key(n)) },
		func(n int) (bool, error) { return o.Claimed(ctx, p.Key(n)) })
}

// errPassedOver is what a probeWindows stat returns for a number to pass
// over: claimed, and no part.
var errPassedOver = errors.New("storage: a claimed number without a part")

// probeWindows lists the parts numbered from on, asking stat about a window
// of numbers at once: stat(n) is part n, ErrNotFound where there is none,
// errPassedOver for a number to pass over. A number without a part is
// passed over when claimed(n), asked in number order; the first one not
// claimed ends the list.
func (p *Parts) probeWindows(from int, stat func(n int) (Info, error), claimed func(n int) (bool, error)) ([]Info, error) {
	var parts []Info
	infos, errs := make([]Info, probeWindow), make([]error, probeWindow)
	for first := from; ; first += probeWindow {
		var wg sync.WaitGroup
		for i := range probeWindow {
			wg.Go(func() { infos[i], errs[i] = stat(first + i) })
		}
		wg.Wait()
		for i := range probeWindow {
			switch {
			case errs[i] == nil:
				parts = append(parts, infos[i])
			case errors.Is(errs[i], errPassedOver):
			case !errors.Is(errs[i], ErrNotFound):
				return nil, fmt.Errorf("list parts under %s: %w", p.prefix, errs[i])
			default:
				ok, err := claimed(first + i)
				if err != nil {
					return nil, fmt.Errorf("list parts under %s: %w", p.prefix, err)
				}
				if !ok {
					return parts, nil
				}
			}
		}
	}
}

// statIndexed is part n of an indexed dataset (see probeWindows's stat).
// An object whose claim was abandoned (its writer stored it after another
// writer gave the claim up for dead, so its records may be stored again)
// is no part.
func (p *Parts) statIndexed(ctx context.Context, o *Objects, n int) (Info, error) {
	in, err := o.Stat(ctx, p.Key(n))
	if err != nil {
		return Info{}, err
	}
	state, _, err := p.index.LeaderGet(ctx, indexDoneKey(p.coll, n))
	switch {
	case err != nil:
		return Info{}, err
	case string(state) == stateAbandoned:
		return Info{}, errPassedOver
	}
	return in, nil
}

// probeIndexed lists the parts of an indexed dataset (see PartIndex) from
// number from on by their numbers. The index numbers the parts from base on
// densely: a writer claims number n (creates its entry) only after reading
// the entries of every number below n. So the parts are the objects of
// numbers from base on up to the first number without an entry; a number
// with an entry and no object is a part abandoned or still uploading, left
// out as List leaves it out, and so is an object whose claim was abandoned
// (see statIndexed), which List would list. The parts below base were
// stored before the index started, and only the store's List finds them.
// Every read goes to the streams' leaders, as probe's do.
func (p *Parts) probeIndexed(ctx context.Context, o *Objects, from, base int) ([]Info, error) {
	var parts []Info
	if from < base {
		before, err := p.listAll(ctx, from)
		if err != nil {
			return nil, err
		}
		for _, in := range before {
			if n, _ := numbered(in.Key, p.base, p.ext); n < base {
				parts = append(parts, in)
			}
		}
		from = base
	}
	more, err := p.probeWindows(from,
		func(n int) (Info, error) { return p.statIndexed(ctx, o, n) },
		func(n int) (bool, error) { return p.index.LeaderHas(ctx, indexEntryKey(p.coll, n)) })
	if err != nil {
		return nil, err
	}
	return append(parts, more...), nil
}
