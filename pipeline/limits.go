package pipeline

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Limit bounds one stream, KV bucket or object store. MaxAge drops what is
// older (only where a dropped message is a copy of what is already stored
// elsewhere, or a log: see AgeLimited). MaxBytes refuses what would not fit:
// a limited stream or bucket discards new messages (jetstream.DiscardNew), so
// a publish or put fails with "maximum bytes exceeded" and nothing it holds
// is dropped. Zero is no limit of that kind.
type Limit struct {
	MaxAge   time.Duration
	MaxBytes int64
}

// Limits are the limits of the topology, by stream or bucket name.
type Limits map[string]Limit

// AgeLimited names what may have a MaxAge, and why what it drops is never
// something a job still needs. Nothing else may: the work queues hold work
// not done yet, lf_jobs the records of every job, lf_models and
// lf_artifacts the models, datasets and results themselves.
var AgeLimited = map[string]string{
	StreamResults: "the results sink stores each result in its job's Parquet parts (lf_artifacts) before it acks it, and a job is finalized from its parts, never from the stream: " +
		"the age limit drops copies the sink has stored (a result is lost only when no results sink runs for the whole max age: the worker-missing and lag alerts fire long before)",
	StreamDatasets: "the dataset sink writes raw records and shards into the dataset's Parquet parts (lf_artifacts) before it acks them, and ingest waits for that",
	StreamDLQ:      "infer dead letters become error rows and ingest rejects become rejects objects as they arrive; older ones can no longer be replayed (largeforge dlq)",
	StreamRoutes:   "routing decisions are a log (the console shows the last ones); no job reads them",
	StreamEvents:   "training events are a log; a job's progress is in its lf_jobs record and its checkpoints in lf_artifacts",
	BucketWorkers:  "heartbeats: a worker silent this long is gone",
}

// Default limits. The MaxBytes are reserved by the server against its
// max_file_store (nats.conf: 20GB) when a stream is created: their sum,
// about 14.5 GiB, leaves room for the age-limited streams. A larger server
// raises them with `topology apply --limit` (see LimitFlagUsage).
const (
	gib = int64(1) << 30
	mib = int64(1) << 20
)

// DefaultLimits returns the limit of every stream and bucket of the
// topology.
func DefaultLimits() Limits {
	return Limits{
		StreamDatasets: {MaxAge: 7 * 24 * time.Hour},
		StreamRequests: {MaxBytes: 1 * gib},
		StreamRoutes:   {MaxAge: 7 * 24 * time.Hour},
		StreamResults:  {MaxAge: 7 * 24 * time.Hour},
		StreamTrain:    {MaxBytes: 64 * mib},
		StreamDLQ:      {MaxAge: 30 * 24 * time.Hour},
		StreamEvents:   {MaxAge: EventsMaxAge},

		BucketJobs:     {MaxBytes: 256 * mib},
		BucketWorkers:  {MaxAge: WorkerHeartbeatTTL, MaxBytes: 16 * mib},
		BucketExperts:  {MaxBytes: 16 * mib},
		BucketDatasets: {MaxBytes: 64 * mib},
		BucketDedupe:   {MaxBytes: 1 * gib},
		BucketClaims:   {MaxBytes: 64 * mib},
		BucketFiles:    {MaxBytes: 64 * mib},

		BucketModels:    {MaxBytes: 4 * gib},
		BucketArtifacts: {MaxBytes: 8 * gib},
	}
}

// Validate checks l: each name a stream or bucket of the topology, no
// negative value, MaxAge only where AgeLimited allows it. Errors wrap
// ErrInvalidOption and name the stream or bucket and the rule.
func (l Limits) Validate() error {
	known := DefaultLimits()
	for _, name := range slices.Sorted(maps.Keys(l)) {
		lim := l[name]
		if _, ok := known[name]; !ok {
			return fmt.Errorf("%w: limit of %q: not a stream or bucket of the topology (%s)", ErrInvalidOption, name, strings.Join(slices.Sorted(maps.Keys(known)), ", "))
		}
		if lim.MaxAge < 0 || lim.MaxBytes < 0 {
			return fmt.Errorf("%w: limit of %s: negative max age or size", ErrInvalidOption, name)
		}
		if _, ok := AgeLimited[name]; lim.MaxAge > 0 && !ok {
			return fmt.Errorf("%w: limit of %s: no max age allowed: it would drop what a job still needs (limit its size instead: a full %s refuses new data, dropping nothing)", ErrInvalidOption, name, name)
		}
		if name == BucketWorkers && lim.MaxAge == 0 {
			return fmt.Errorf("%w: limit of %s: its max age is the heartbeat TTL and cannot be 0", ErrInvalidOption, name)
		}
	}
	return nil
}

// LimitFlagUsage documents the --limit flag that Set parses.
const LimitFlagUsage = "limit a stream or bucket: NAME=DURATION (max age, e.g. LF_RESULTS=72h) or NAME=SIZE (max bytes, e.g. lf_artifacts=500GiB; 0: none); repeatable; see pipeline.DefaultLimits"

// Set parses one NAME=VALUE: a Go duration (with d for days: 30d) sets
// NAME's max age, a size (a number with B, KB, MB, GB, TB, KiB, MiB, GiB or
// TiB) its max bytes; "0" removes both. The result is not validated: call
// Validate.
func (l Limits) Set(spec string) error {
	name, val, ok := strings.Cut(spec, "=")
	name, val = strings.TrimSpace(name), strings.TrimSpace(val)
	if !ok || name == "" || val == "" {
		return fmt.Errorf("%w: limit %q: want NAME=DURATION or NAME=SIZE", ErrInvalidOption, spec)
	}
	lim := l[name]
	if val == "0" {
		l[name] = Limit{}
		return nil
	}
	if n, err := ParseSize(val); err == nil {
		lim.MaxBytes = n
	} else if d, derr := parseDays(val); derr == nil {
		lim.MaxAge = d
	} else {
		return fmt.Errorf("%w: limit %q: %q is neither a duration (72h, 30d) nor a size (500GiB)", ErrInvalidOption, spec, val)
	}
	l[name] = lim
	return nil
}

func parseDays(s string) (time.Duration, error) {
	if d, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseFloat(d, 64)
		if err != nil {
			return 0, err
		}
		return time.Duration(n * float64(24*time.Hour)), nil
	}
	return time.ParseDuration(s)
}

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1},
}

// ParseSize parses a byte size: a whole number with a unit (B, KB, MB, GB,
// TB, KiB, MiB, GiB, TiB).
func ParseSize(s string) (int64, error) {
	for _, u := range sizeUnits {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
			if err != nil || n < 0 {
				return 0, fmt.Errorf("%w: size %q", ErrInvalidOption, s)
			}
			return n * u.mult, nil
		}
	}
	return 0, fmt.Errorf("%w: size %q has no unit (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)", ErrInvalidOption, s)
}

// WithLimits returns t with l applied to its streams, KV buckets and object
// stores (a name l does not hold keeps what t declares). A stream with a
// MaxBytes discards new messages; one with a MaxAge below the duplicate
// window gets that age as its window (the server requires it).
func (t Topology) WithLimits(l Limits) (Topology, error) {
	if err := l.Validate(); err != nil {
		return t, err
	}
	t.Streams = slices.Clone(t.Streams)
	for i, s := range t.Streams {
		lim, ok := l[s.Name]
		if !ok {
			continue
		}
		s.MaxAge, s.MaxBytes, s.Discard = lim.MaxAge, lim.MaxBytes, jetstream.DiscardOld
		if lim.MaxBytes > 0 {
			s.Discard = jetstream.DiscardNew
		}
		if s.MaxAge > 0 && s.Duplicates > s.MaxAge {
			s.Duplicates = s.MaxAge
		}
		t.Streams[i] = s
	}
	t.KeyValues = slices.Clone(t.KeyValues)
	for i, kv := range t.KeyValues {
		if lim, ok := l[kv.Bucket]; ok {
			kv.TTL, kv.MaxBytes = lim.MaxAge, lim.MaxBytes
			t.KeyValues[i] = kv
		}
	}
	t.ObjectStores = slices.Clone(t.ObjectStores)
	for i, o := range t.ObjectStores {
		if lim, ok := l[o.Bucket]; ok {
			o.MaxBytes = lim.MaxBytes
			t.ObjectStores[i] = o
		}
	}
	return t, nil
}

// sameLimit reports whether two max values are equal, every value ≤ 0
// meaning none.
func sameLimit(a, b int64) bool { return a == b || (a <= 0 && b <= 0) }

// keepStreamLimits is want with the limits of the existing stream of its
// name (KeepLimits); want as it is when there is none.
func (b *Bus) keepStreamLimits(ctx context.Context, want jetstream.StreamConfig) jetstream.StreamConfig {
	s, err := lookupStream(ctx, b.js, want.Name)
	if err != nil {
		return want
	}
	have := s.CachedInfo().Config
	want.MaxAge, want.MaxBytes, want.MaxMsgs, want.Discard = have.MaxAge, have.MaxBytes, have.MaxMsgs, have.Discard
	want.Duplicates = DuplicateWindow
	if want.MaxAge > 0 && want.Duplicates > want.MaxAge {
		want.Duplicates = want.MaxAge
	}
	return want
}

// keepBucketLimits returns the max age and bytes of the existing stream
// behind a bucket (KeepLimits), or age and size when there is none.
func (b *Bus) keepBucketLimits(ctx context.Context, stream string, age time.Duration, size int64) (time.Duration, int64) {
	s, err := lookupStream(ctx, b.js, stream)
	if err != nil {
		return age, size
	}
	have := s.CachedInfo().Config
	return have.MaxAge, have.MaxBytes
}
