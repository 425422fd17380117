package jobs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/largeforge/largeforge/pipeline"
)

// The custom_ids a job submitted are recorded in lf_jobs beside the job, in
// chunks under IDsKey(job, n) for n = 0, 1, 2, ... (newline-separated
// custom_ids, which hold no control characters), each written before any
// request whose id it holds is published. The results sink accepts a result
// only for a recorded custom_id (IDSet), so a publisher on lf.res.<job>
// cannot add rows the job never asked for.
const (
	// IDsChunkRows is the most custom_ids one chunk holds.
	IDsChunkRows = 1024
	// IDsChunkBytes bounds a chunk's value, well under max_payload (1024
	// custom_ids of schemas.MaxCustomIDLen bytes would not fit).
	IDsChunkBytes = 256 << 10
)

// IDsKey is the lf_jobs key of a job's n-th chunk of custom_ids:
// <job>.ids.<n>. Job records are keyed by the bare id, so List skips these.
func IDsKey(job string, n int) string { return job + ".ids." + strconv.Itoa(n) }

// PutIDs records chunk n of a job's custom_ids. A chunk is only ever
// extended: when the stored chunk already starts with ids (a submission
// resumed with --job-id writes the same chunks again, perhaps cut at other
// points) it is left as it is, so no id recorded before is ever taken away.
func (s *Store) PutIDs(ctx context.Context, job string, n int, ids []string) error {
	if err := ValidID(job); err != nil {
		return err
	}
	value := []byte(strings.Join(ids, "\n"))
	key := IDsKey(job, n)
	e, err := s.kv.Get(ctx, key)
	switch {
	case err == nil && bytes.HasPrefix(e.Value, value) && (len(e.Value) == len(value) || e.Value[len(value)] == '\n'):
		return nil
	case err != nil && !errors.Is(err, pipeline.ErrKeyNotFound):
		return fmt.Errorf("record the custom_ids of job %s (chunk %d): %w", job, n, err)
	}
	if _, err := s.kv.Put(ctx, key, value); err != nil {
		return fmt.Errorf("record the custom_ids of job %s (chunk %d): %w", job, n, err)
	}
	return nil
}

// IDSet is the set of custom_ids a job submitted, as far as a reader has
// loaded them (LoadIDs); 16 bytes of SHA-256 per id keep a 1M-row job to a
// few tens of megabytes whatever the ids' length.
type IDSet struct {
	set  map[[16]byte]struct{}
	next int // the chunk after the last one read whole
}

// IDHash is the key of a custom_id in an IDSet (and in the submitter's
// check for repeated custom_ids).
func IDHash(id string) [16]byte {
	h := sha256.Sum256([]byte(id))
	return [16]byte(h[:16])
}

// Has reports whether id was loaded.
func (s *IDSet) Has(id string) bool {
	_, ok := s.set[IDHash(id)]
	return ok
}

// Len is the number of ids loaded.
func (s *IDSet) Len() int { return len(s.set) }

// LoadIDs adds to set the chunks of job's custom_ids it does not hold yet:
// the last one it read (which may have grown since) and every one after it.
func (s *Store) LoadIDs(ctx context.Context, job string, set *IDSet) error {
	if err := ValidID(job); err != nil {
		return err
	}
	if set.set == nil {
		set.set = map[[16]byte]struct{}{}
	}
	n := max(set.next-1, 0)
	for ; ; n++ {
		e, err := s.kv.Get(ctx, IDsKey(job, n))
		if errors.Is(err, pipeline.ErrKeyNotFound) {
			break
		}
		if err != nil {
			return fmt.Errorf("load the custom_ids of job %s (chunk %d): %w", job, n, err)
		}
		for _, id := range bytes.Split(e.Value, []byte{'\n'}) {
			if len(id) > 0 {
				set.set[IDHash(string(id))] = struct{}{}
			}
		}
	}
	set.next = max(n, set.next)
	return nil
}
