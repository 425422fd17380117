package pipeline

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Stream names.
const (
	StreamDatasets = "LF_DATASETS"
	StreamRequests = "LF_REQUESTS"
	StreamRoutes   = "LF_ROUTES"
	StreamResults  = "LF_RESULTS"
	StreamDLQ      = "LF_DLQ"
	StreamEvents   = "LF_EVENTS"
)

// KV bucket and object store names.
const (
	BucketJobs     = "lf_jobs"
	BucketWorkers  = "lf_workers"
	BucketExperts  = "lf_experts"
	BucketDatasets = "lf_datasets"
	BucketModels   = "lf_models" // object store
	// BucketArtifacts holds dataset parts and rejects, results, training
	// checkpoints and uploaded files, by storage key (object store).
	BucketArtifacts = "lf_artifacts"
	// BucketDedupe holds the record ids of every dataset
	// (<dataset>/<record id>), shared by every dataset sink.
	BucketDedupe = "lf_dedupe"
	// BucketClaims holds one entry per object name of lf_artifacts created
	// once (a part): the claim that makes create-if-absent atomic across
	// machines, which object stores do not offer.
	BucketClaims = "lf_claims"
	// BucketFiles holds the description of every file of the Files API by
	// file id (a copy of its files/<id>/meta.json in lf_artifacts): the
	// listing reads these entries, not every object of lf_artifacts.
	BucketFiles = "lf_files"
)

// Topology limits.
const (
	// MaxMsgSize is the largest message (headers and data) any stream accepts.
	MaxMsgSize = 1 << 20
	// DuplicateWindow is how long a stream remembers Nats-Msg-Id values.
	DuplicateWindow = 2 * time.Minute
	// WorkerHeartbeatTTL is the TTL of the lf_workers bucket.
	WorkerHeartbeatTTL = 30 * time.Second
	// EventsMaxAge is how long LF_EVENTS keeps training events.
	EventsMaxAge = 7 * 24 * time.Hour
)

// ValidToken reports whether s can be one token of a subject: not empty, no
// whitespace, no '.', '*' or '>'. The error wraps ErrInvalidOption. The subject
// helpers (DatasetRawSubject, ...) build subjects to publish on and accept only
// valid tokens; the filter helpers (RequestFilter, ...) also accept AnyToken.
func ValidToken(s string) error {
	if s == "" {
		return fmt.Errorf("%w: empty subject token", ErrInvalidOption)
	}
	if i := strings.IndexFunc(s, func(r rune) bool {
		return r == '.' || r == '*' || r == '>' || r == ' ' || r == '\t' || r == '\r' || r == '\n' || r == '\f' || r == '\v' || r < 0x20 || r == 0x7f
	}); i >= 0 {
		return fmt.Errorf("%w: subject token %q has a forbidden character %q (no spaces, '.', '*', '>')", ErrInvalidOption, s, s[i])
	}
	return nil
}

func subject(parts ...string) (string, error) {
	for _, p := range parts[2:] { // parts[0:2] are constants
		if err := ValidToken(p); err != nil {
			return "", err
		}
	}
	return strings.Join(parts, "."), nil
}

// DatasetRawSubject is lf.data.<ds>.raw: raw records from any client.
func DatasetRawSubject(ds string) (string, error) { return subject("lf", "data", ds, "raw") }

// DatasetShardSubject is lf.data.<ds>.shard: validated shards.
func DatasetShardSubject(ds string) (string, error) { return subject("lf", "data", ds, "shard") }

// RequestSubject is lf.req.<job>.<model>.
func RequestSubject(job, model string) (string, error) { return subject("lf", "req", job, model) }

// RouteSubject is lf.route.<job>.
func RouteSubject(job string) (string, error) { return subject("lf", "route", job) }

// ResultSubject is lf.res.<job>.
func ResultSubject(job string) (string, error) { return subject("lf", "res", job) }

// TrainEventSubject is lf.events.train.<job>: a training job's step and
// evaluation events.
func TrainEventSubject(job string) (string, error) { return subject("lf", "events", "train", job) }

// DLQSubject is lf.dlq.<stage>.<token> (token: the job or dataset).
func DLQSubject(stage, token string) (string, error) { return subject("lf", "dlq", stage, token) }

// AnyToken stands for any one token in the filter helpers (a subject wildcard).
const AnyToken = "*"

func filter(parts ...string) (string, error) {
	for _, p := range parts[2:] {
		if p == AnyToken {
			continue
		}
		if err := ValidToken(p); err != nil {
			return "", err
		}
	}
	return strings.Join(parts, "."), nil
}

// RequestFilter is a consumer filter on lf.req.<job>.<model>; either may be
// AnyToken: RequestFilter(AnyToken, "stories260K") is lf.req.*.stories260K.
func RequestFilter(job, model string) (string, error) { return filter("lf", "req", job, model) }

// DatasetRawFilter is lf.data.<ds>.raw where ds may be AnyToken.
func DatasetRawFilter(ds string) (string, error) { return filter("lf", "data", ds, "raw") }

// DatasetShardFilter is lf.data.<ds>.shard where ds may be AnyToken.
func DatasetShardFilter(ds string) (string, error) { return filter("lf", "data", ds, "shard") }

// RouteFilter is lf.route.<job> where job may be AnyToken.
func RouteFilter(job string) (string, error) { return filter("lf", "route", job) }

// ResultFilter is lf.res.<job> where job may be AnyToken.
func ResultFilter(job string) (string, error) { return filter("lf", "res", job) }

// DLQFilter is lf.dlq.<stage>.<token> where either may be AnyToken.
func DLQFilter(stage, token string) (string, error) { return filter("lf", "dlq", stage, token) }

// Topology is the set of streams, KV buckets and object stores that
// EnsureTopology applies.
type Topology struct {
	Streams      []jetstream.StreamConfig
	KeyValues    []jetstream.KeyValueConfig
	ObjectStores []jetstream.ObjectStoreConfig
	// RaiseOnly: replica counts are raised, never lowered; for a count
	// guessed from the servers online (a node restarted while another is
	// down must not take replicas away).
	RaiseOnly bool
	// KeepLimits: an existing stream or bucket keeps its max age, size and
	// discard policy (those an operator applied with topology apply
	// --limit); only what is created gets the declared ones. EnsureTopology
	// (any admin command) keeps them.
	KeepLimits bool
}

// ReplicasFor is the replica count of the topology on a cluster of nodes
// JetStream servers: three on three or more, one below (a single server, or
// two nodes, where three replicas cannot be placed).
func ReplicasFor(nodes int) int {
	if nodes >= 3 {
		return 3
	}
	return 1
}

// DefaultTopology returns LargeForge's topology with the given replica count
// (1 for the embedded single node, 3 for a cluster) and DefaultLimits.
func DefaultTopology(replicas int) Topology {
	t, err := baseTopology(replicas).WithLimits(DefaultLimits())
	if err != nil {
		panic(err) // DefaultLimits are valid: TestDefaultLimits
	}
	return t
}

func baseTopology(replicas int) Topology {
	if replicas < 1 {
		replicas = 1
	}
	stream := func(name, subj, desc string, ret jetstream.RetentionPolicy) jetstream.StreamConfig {
		return jetstream.StreamConfig{
			Name:        name,
			Description: desc,
			Subjects:    []string{subj},
			Retention:   ret,
			Storage:     jetstream.FileStorage,
			Discard:     jetstream.DiscardOld,
			MaxMsgSize:  MaxMsgSize,
			Duplicates:  DuplicateWindow,
			Replicas:    replicas,
		}
	}
	kv := func(bucket, desc string, history uint8, ttl time.Duration) jetstream.KeyValueConfig {
		return jetstream.KeyValueConfig{
			Bucket:      bucket,
			Description: desc,
			History:     history,
			TTL:         ttl,
			Storage:     jetstream.FileStorage,
			Replicas:    replicas,
		}
	}
	events := stream(StreamEvents, "lf.events.train.>", "training step and evaluation events", jetstream.LimitsPolicy)
	events.MaxAge = EventsMaxAge
	return Topology{
		Streams: []jetstream.StreamConfig{
			stream(StreamDatasets, "lf.data.>", "raw records and validated shards per dataset", jetstream.LimitsPolicy),
			stream(StreamRequests, "lf.req.>", "completion, chat and scoring requests (work queue)", jetstream.WorkQueuePolicy),
			stream(StreamRoutes, "lf.route.>", "routing decisions", jetstream.LimitsPolicy),
			stream(StreamResults, "lf.res.>", "one result or error row per request", jetstream.LimitsPolicy),
			stream(StreamTrain, "lf.train.>", "training jobs, one message per job (work queue)", jetstream.WorkQueuePolicy),
			stream(StreamDLQ, "lf.dlq.>", "dead letters: what could not be processed, with the reason and original bytes", jetstream.LimitsPolicy),
			events,
		},
		KeyValues: []jetstream.KeyValueConfig{
			kv(BucketJobs, "job state", 1, 0),
			kv(BucketWorkers, "worker heartbeats", 1, WorkerHeartbeatTTL),
			kv(BucketExperts, "expert configs", 1, 0),
			kv(BucketDatasets, "dataset manifests", 1, 0),
			kv(BucketDedupe, "record ids of every dataset, shared by the dataset sinks", 1, 0),
			kv(BucketClaims, "claims of the immutable object names of lf_artifacts", 1, 0),
			kv(BucketFiles, "the Files API's file descriptions by file id", 1, 0),
		},
		ObjectStores: []jetstream.ObjectStoreConfig{
			{Bucket: BucketModels, Description: "model directories", Storage: jetstream.FileStorage, Replicas: replicas},
			{Bucket: BucketArtifacts, Description: "dataset parts and rejects, results, checkpoints, files", Storage: jetstream.FileStorage, Replicas: replicas},
		},
	}
}

// Only returns the part of t named: the streams, KV buckets and object
// stores whose names are among names (what one role uses).
func (t Topology) Only(names ...string) Topology {
	var out Topology
	for _, s := range t.Streams {
		if slices.Contains(names, s.Name) {
			out.Streams = append(out.Streams, s)
		}
	}
	for _, kv := range t.KeyValues {
		if slices.Contains(names, kv.Bucket) {
			out.KeyValues = append(out.KeyValues, kv)
		}
	}
	for _, o := range t.ObjectStores {
		if slices.Contains(names, o.Bucket) {
			out.ObjectStores = append(out.ObjectStores, o)
		}
	}
	return out
}

// StreamNames names the streams behind every part of t: its streams,
// KV_<bucket> of each KV bucket and OBJ_<bucket> of each object store.
func (t Topology) StreamNames() []string {
	var names []string
	for _, s := range t.Streams {
		names = append(names, s.Name)
	}
	for _, kv := range t.KeyValues {
		names = append(names, "KV_"+kv.Bucket)
	}
	for _, o := range t.ObjectStores {
		names = append(names, "OBJ_"+o.Bucket)
	}
	return names
}

// CheckTopology reports whether every stream, KV bucket and object store of
// topo exists, changing nothing: a role that may not create them checks
// instead of applying. The error wraps ErrTopologyMissing and names each
// one missing; any other failure (no answer, a denied lookup) is returned
// as it is.
func (b *Bus) CheckTopology(ctx context.Context, topo Topology) error {
	var missing []string
	check := func(kind, name string, err error) error {
		switch {
		case err == nil:
			return nil
		case errors.Is(err, jetstream.ErrStreamNotFound), errors.Is(err, jetstream.ErrBucketNotFound):
			missing = append(missing, kind+" "+name)
			return nil
		default:
			return fmt.Errorf("check %s %s: %w", kind, name, err)
		}
	}
	for _, s := range topo.Streams {
		_, err := b.js.Stream(ctx, s.Name)
		if err := check("stream", s.Name, err); err != nil {
			return err
		}
	}
	for _, kv := range topo.KeyValues {
		_, err := b.js.KeyValue(ctx, kv.Bucket)
		if err := check("kv bucket", kv.Bucket, err); err != nil {
			return err
		}
	}
	for _, o := range topo.ObjectStores {
		_, err := b.js.ObjectStore(ctx, o.Bucket)
		if err := check("object store", o.Bucket, err); err != nil {
			return err
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %s", ErrTopologyMissing, strings.Join(missing, ", "))
	}
	return nil
}

// EnsureTopology applies DefaultTopology(1) idempotently, raise-only: a
// cluster's topology with more replicas keeps them (every command run as
// admin calls it). See ApplyTopology.
func (b *Bus) EnsureTopology(ctx context.Context) error {
	topo := DefaultTopology(1)
	topo.RaiseOnly, topo.KeepLimits = true, true
	return b.ApplyTopology(ctx, topo)
}

// ApplyTopology creates what is missing and updates what differs, replica
// counts included: a topology created with one replica is raised in place
// (the servers copy what it holds to the new replicas). It never deletes
// anything: an existing stream whose retention or storage differs (which the
// server cannot change in place), or whose update the server rejects, is left
// as it is with a warning.
func (b *Bus) ApplyTopology(ctx context.Context, topo Topology) error {
	for _, want := range topo.Streams {
		want.Replicas = b.keepReplicas(ctx, topo, want.Name, want.Replicas)
		if topo.KeepLimits {
			want = b.keepStreamLimits(ctx, want)
		}
		if err := b.ensureStream(ctx, want); err != nil {
			return err
		}
	}
	for _, want := range topo.KeyValues {
		want.Replicas = b.keepReplicas(ctx, topo, "KV_"+want.Bucket, want.Replicas)
		if topo.KeepLimits {
			want.TTL, want.MaxBytes = b.keepBucketLimits(ctx, "KV_"+want.Bucket, want.TTL, want.MaxBytes)
		}
		matches := func(c jetstream.StreamConfig) bool {
			return c.Description == want.Description && c.MaxMsgsPerSubject == max(int64(want.History), 1) && c.MaxAge == want.TTL && sameLimit(c.MaxBytes, want.MaxBytes)
		}
		create := func(ctx context.Context) error { _, err := b.js.CreateKeyValue(ctx, want); return err }
		update := func(ctx context.Context) error { _, err := b.js.CreateOrUpdateKeyValue(ctx, want); return err }
		if err := b.ensureBucket(ctx, "kv bucket", want.Bucket, "KV_"+want.Bucket, want.Replicas, matches, create, update); err != nil {
			return err
		}
	}
	for _, want := range topo.ObjectStores {
		want.Replicas = b.keepReplicas(ctx, topo, "OBJ_"+want.Bucket, want.Replicas)
		if topo.KeepLimits {
			_, want.MaxBytes = b.keepBucketLimits(ctx, "OBJ_"+want.Bucket, 0, want.MaxBytes)
		}
		matches := func(c jetstream.StreamConfig) bool {
			return c.Description == want.Description && sameLimit(c.MaxBytes, want.MaxBytes)
		}
		create := func(ctx context.Context) error { _, err := b.js.CreateObjectStore(ctx, want); return err }
		update := func(ctx context.Context) error { _, err := b.js.CreateOrUpdateObjectStore(ctx, want); return err }
		if err := b.ensureBucket(ctx, "object store", want.Bucket, "OBJ_"+want.Bucket, want.Replicas, matches, create, update); err != nil {
			return err
		}
	}
	return nil
}

// ensureBucket creates a KV bucket or object store (kind, bucket, backed by
// stream) when it is missing, and updates it only when its stream differs
// from the declaration (replicas, or matches false): several nodes applying
// the topology at once each create it (the same create is idempotent), and
// none sends an update, which the server leaves unanswered while the
// bucket's creation is in flight.
func (b *Bus) ensureBucket(ctx context.Context, kind, bucket, stream string, replicas int,
	matches func(jetstream.StreamConfig) bool, create, update func(context.Context) error) error {
	s, err := lookupStream(ctx, b.js, stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		err = create(ctx)
		if err == nil {
			b.log.Info().Str("bucket", bucket).Msg(kind + " created")
			return nil
		}
		if !errors.Is(err, jetstream.ErrBucketExists) {
			return fmt.Errorf("%s %s: %w", kind, bucket, err)
		}
		s, err = lookupStream(ctx, b.js, stream) // another process created it
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w", kind, bucket, err)
	}
	have := s.CachedInfo().Config
	if max(have.Replicas, 1) == max(replicas, 1) && matches(have) {
		return nil
	}
	if err := update(ctx); err != nil {
		if !isAPIError(err) {
			return fmt.Errorf("%s %s: %w", kind, bucket, err)
		}
		b.log.Warn().Err(err).Str("bucket", bucket).Msg(kind + " exists with a configuration that cannot be updated; leaving it")
		return nil
	}
	b.log.Info().Str("bucket", bucket).Int("replicas", replicas).Msg(kind + " updated")
	return nil
}

// WaitTopology waits until every stream, KV bucket and object store of topo
// has a leader and all its replicas current, so that consumers can be
// created on them (a stream being created or moved to more replicas answers
// "insufficient resources" meanwhile). On a single server it returns at once.
func (b *Bus) WaitTopology(ctx context.Context, topo Topology) error {
	for _, name := range topo.StreamNames() {
		for {
			err := streamSettled(ctx, b.js, name)
			if err == nil {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("wait for the topology: %w (%w)", ctx.Err(), err)
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	return nil
}

func streamSettled(ctx context.Context, js jetstream.JetStream, name string) error {
	s, err := lookupStream(ctx, js, name)
	if err != nil {
		return fmt.Errorf("stream %s: %w", name, err)
	}
	info := s.CachedInfo()
	if info.Cluster == nil {
		return nil
	}
	if info.Cluster.Leader == "" {
		return fmt.Errorf("stream %s has no leader yet", name)
	}
	current := 1
	for _, p := range info.Cluster.Replicas {
		if p.Current && !p.Offline {
			current++
		}
	}
	if current < info.Config.Replicas {
		return fmt.Errorf("stream %s: %d of %d replicas current", name, current, info.Config.Replicas)
	}
	return nil
}

// keepReplicas is the replica count to declare for stream: want, or with
// topo.RaiseOnly the stream's own count when that is higher.
func (b *Bus) keepReplicas(ctx context.Context, topo Topology, stream string, want int) int {
	if !topo.RaiseOnly {
		return want
	}
	s, err := lookupStream(ctx, b.js, stream)
	if err != nil { // missing (created with want) or not readable (the update says why)
		return want
	}
	return max(want, s.CachedInfo().Config.Replicas)
}

// streamLookupTry bounds one lookup of a stream by lookupStream.
const streamLookupTry = 2 * time.Second

// lookupStream is js.Stream asked again, until ctx ends, when a try gets no
// answer: on a cluster a stream being created has no leader to answer yet,
// and a request in that moment is never answered.
func lookupStream(ctx context.Context, js jetstream.JetStream, name string) (jetstream.Stream, error) {
	for {
		try, cancel := context.WithTimeout(ctx, streamLookupTry)
		s, err := js.Stream(try, name)
		cancel()
		if err == nil || ctx.Err() != nil || !(errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout)) {
			return s, err
		}
	}
}

func (b *Bus) ensureStream(ctx context.Context, want jetstream.StreamConfig) error {
	s, err := lookupStream(ctx, b.js, want.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if _, err := b.js.CreateStream(ctx, want); err != nil {
			if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) { // another process won the race
				return b.ensureStream(ctx, want)
			}
			return fmt.Errorf("create stream %s: %w", want.Name, err)
		}
		b.log.Info().Str("stream", want.Name).Msg("stream created")
		return nil
	}
	if err != nil {
		return fmt.Errorf("stream %s: %w", want.Name, err)
	}
	have := s.CachedInfo().Config
	log := b.log.With().Str("stream", want.Name).Logger()
	if have.Retention != want.Retention || have.Storage != want.Storage {
		log.Warn().Str("have_retention", have.Retention.String()).Str("want_retention", want.Retention.String()).
			Str("have_storage", have.Storage.String()).Str("want_storage", want.Storage.String()).
			Msg("existing stream has an incompatible retention or storage; leaving it as it is")
		return nil
	}
	if streamMatches(have, want) {
		return nil
	}
	upd := have // keep what we do not manage (replicas, placement, metadata, ...)
	upd.Description = want.Description
	upd.Subjects = want.Subjects
	upd.Discard = want.Discard
	upd.MaxMsgSize = want.MaxMsgSize
	upd.Duplicates = want.Duplicates
	upd.MaxAge = want.MaxAge
	upd.MaxBytes = want.MaxBytes
	upd.MaxMsgs = want.MaxMsgs
	upd.Replicas = want.Replicas
	if _, err := b.js.UpdateStream(ctx, upd); err != nil {
		if !isAPIError(err) {
			return fmt.Errorf("update stream %s: %w", want.Name, err)
		}
		log.Warn().Err(err).Msg("existing stream cannot be updated to the declared configuration; leaving it as it is")
		return nil
	}
	log.Info().Msg("stream updated")
	return nil
}

func streamMatches(have, want jetstream.StreamConfig) bool {
	return have.Description == want.Description &&
		slices.Equal(have.Subjects, want.Subjects) &&
		have.Discard == want.Discard &&
		have.MaxMsgSize == want.MaxMsgSize &&
		have.Duplicates == want.Duplicates &&
		have.MaxAge == want.MaxAge &&
		max(have.Replicas, 1) == max(want.Replicas, 1) &&
		sameLimit(have.MaxBytes, want.MaxBytes) &&
		(have.MaxMsgs == want.MaxMsgs || (have.MaxMsgs <= 0 && want.MaxMsgs <= 0))
}

func isAPIError(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr)
}

// Purge removes the messages of stream whose subjects match subject (a
// filter such as lf.req.<job>.>) and returns how many there were.
func (b *Bus) Purge(ctx context.Context, stream, subject string) (uint64, error) {
	s, err := b.js.Stream(ctx, stream)
	if err != nil {
		return 0, fmt.Errorf("purge %s from %s: %w", subject, stream, err)
	}
	before, err := s.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		return 0, fmt.Errorf("purge %s from %s: %w", subject, stream, err)
	}
	if err := s.Purge(ctx, jetstream.WithPurgeSubject(subject)); err != nil {
		return 0, fmt.Errorf("purge %s from %s: %w", subject, stream, err)
	}
	var n uint64
	for _, c := range before.State.Subjects {
		n += c
	}
	return n, nil
}

// AckFloor returns the stream sequence up to which a durable consumer has
// settled (acked or terminated) every message it was given: once it reaches a
// message's sequence, the consumer is done with that message and all before it.
func (b *Bus) AckFloor(ctx context.Context, stream, durable string) (uint64, error) {
	c, err := b.js.Consumer(ctx, stream, durable)
	if err != nil {
		return 0, fmt.Errorf("consumer %s/%s: %w", stream, durable, err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("consumer %s/%s: %w", stream, durable, err)
	}
	return info.AckFloor.Stream, nil
}

// JetStream errors a cluster that is still forming answers (its peers not
// all online or current yet): worth retrying, not a refusal.
const (
	errCodeClusterNoPeers        jetstream.ErrorCode = 10005 // no suitable peers for placement
	errCodeClusterNotAvailable   jetstream.ErrorCode = 10008 // JetStream system temporarily unavailable
	errCodeInsufficientResources jetstream.ErrorCode = 10023 // insufficient resources
)

// ClusterForming reports whether err is one of the answers a JetStream
// cluster gives while it is still forming (a peer offline for placement, the
// system temporarily unavailable, resources not yet reported): a command
// that applies the topology retries it.
func ClusterForming(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	switch apiErr.ErrorCode {
	case errCodeClusterNoPeers, errCodeClusterNotAvailable, errCodeInsufficientResources:
		return true
	}
	return false
}

// Unanswered reports whether err says a JetStream request got no answer in
// time (no responders, a timeout) or an answer a cluster gives while it
// elects leaders or forms (ClusterForming): what a node killed or restarted
// moments ago causes for a few seconds, worth asking again.
// It is the Publisher's retryable set plus a deadline and ClusterForming.
func Unanswered(err error) bool {
	return retryable(err) || errors.Is(err, context.DeadlineExceeded) || ClusterForming(err)
}
