package pipeline

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/rs/zerolog"
)

// KV is a key-value bucket (lf_jobs, lf_workers, lf_experts, lf_datasets).
// Its errors wrap ErrKeyNotFound, ErrKeyExists and ErrWrongRevision where
// those apply, and the JetStream error they come from.
type KV struct {
	kv jetstream.KeyValue
	js jetstream.JetStream
}

// Entry is one value of a bucket.
type Entry struct {
	Key      string
	Value    []byte
	Revision uint64
	// Deleted marks a delete or purge (only a Watcher returns those).
	Deleted bool
	// Created is when the server stored this revision (its clock).
	Created time.Time
}

func entryOf(e jetstream.KeyValueEntry) Entry {
	return Entry{Key: e.Key(), Value: e.Value(), Revision: e.Revision(), Deleted: e.Operation() != jetstream.KeyValuePut, Created: e.Created()}
}

// KV opens the key-value bucket (it must exist: see EnsureTopology).
//
// Opening is one request (the bucket's stream info), which a cluster that
// lost a node answers late or never while it elects the stream's leader:
// it is asked again (askAgain, the first attempt waiting kvOpenAttempt),
// under the caller's deadline or, where ctx has none, kvOpenWait in all.
func (b *Bus) KV(ctx context.Context, bucket string) (*KV, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, kvOpenWait)
		defer cancel()
	}
	var kv jetstream.KeyValue
	err := askAgain(ctx, kvOpenAttempt, func(ctx context.Context) (err error) {
		kv, err = b.js.KeyValue(ctx, bucket)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("kv bucket %s: %w", bucket, err)
	}
	return &KV{kv: kv, js: b.js}, nil
}

// How long one attempt to open a bucket waits, and how long all of them
// wait where the caller set no deadline.
var (
	kvOpenAttempt = 10 * time.Second
	kvOpenWait    = 2 * time.Minute
)

// kvRetryPause is the pause before a KV request is asked again (an open, a
// read or a write whose answer was lost).
const kvRetryPause = 250 * time.Millisecond

// askAgain runs one KV request (f, given each attempt's context) and runs
// it again, after kvRetryPause, while an attempt fails in a way a retry may
// cure (transient), until ctx ends; the n-th attempt waits n times attempt,
// so an answer lost with a killed cluster node is asked for again soon and
// one that is only slow under load still comes in a later attempt.
func askAgain(ctx context.Context, attempt time.Duration, f func(context.Context) error) error {
	for n := 1; ; n++ {
		actx, cancel := context.WithTimeout(ctx, time.Duration(n)*attempt)
		err := f(actx)
		cancel()
		if err == nil || ctx.Err() != nil || !transient(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(kvRetryPause):
		}
	}
}

// transient tells the failures of a KV request that a retry may cure:
// those Unanswered reports (no answer in time, a cluster electing leaders)
// and a write's first copy still being stored (errCodeDuplicateInFlight).
func transient(err error) bool {
	var api *jetstream.APIError
	return Unanswered(err) || (errors.As(err, &api) && api.ErrorCode == errCodeDuplicateInFlight)
}

// kvRequestWait bounds one KV request's wait for its answer, even under a
// caller's longer deadline: an answer lost with a killed cluster node
// fails the request after this long (a caller retries) rather than holding
// it for the rest of the deadline. jetstream gives a request without a
// deadline 5 s.
var kvRequestWait = 30 * time.Second

// requestContext is ctx bounded to kvRequestWait.
func requestContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, kvRequestWait)
}

// Name is the bucket's name.
func (k *KV) Name() string { return k.kv.Bucket() }

// Get reads key; the error wraps ErrKeyNotFound when there is none. A read
// whose answer is lost is asked again (see read: the first attempt waits
// kvAttemptWait, all of them kvRequestWait).
func (k *KV) Get(ctx context.Context, key string) (Entry, error) {
	var e jetstream.KeyValueEntry
	err := k.read(ctx, kvAttemptWait, func(ctx context.Context) (err error) {
		e, err = k.kv.Get(ctx, key)
		return err
	})
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Entry{}, fmt.Errorf("%s %s: %w: %w", k.Name(), key, ErrKeyNotFound, err)
	}
	if err != nil {
		return Entry{}, fmt.Errorf("%s %s: %w", k.Name(), key, err)
	}
	return entryOf(e), nil
}

// read runs one idempotent request, asked again (askAgain) within
// kvRequestWait, the first attempt waiting attempt.
func (k *KV) read(ctx context.Context, attempt time.Duration, f func(context.Context) error) error {
	ctx, cancel := requestContext(ctx)
	defer cancel()
	return askAgain(ctx, attempt, f)
}

// Put writes key and returns its new revision.
func (k *KV) Put(ctx context.Context, key string, value []byte) (uint64, error) {
	rev, err := k.write(ctx, key, value, nil)
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w", k.Name(), key, err)
	}
	return rev, nil
}

// Create writes key only when it does not exist; the error wraps
// ErrKeyExists when it does.
func (k *KV) Create(ctx context.Context, key string, value []byte) (uint64, error) {
	zero := uint64(0)
	rev, err := k.write(ctx, key, value, &zero)
	if wrongRevision(err) {
		// The key exists, or its last revision is a delete, which
		// jetstream's Create writes over (taking the delete's revision).
		cctx, cancel := requestContext(ctx)
		defer cancel()
		rev, err = k.kv.Create(cctx, key, value)
	}
	if errors.Is(err, jetstream.ErrKeyExists) {
		return 0, fmt.Errorf("%s %s: %w: %w", k.Name(), key, ErrKeyExists, err)
	}
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w", k.Name(), key, err)
	}
	return rev, nil
}

// kvAttemptWait is how long the first attempt of a KV write or read waits
// for its answer before it is sent again (the n-th waits n times this,
// all within kvRequestWait); a write is sent again under the same msg id: a
// write whose answer was lost with a killed cluster node is stored once
// and answered by the node the client reconnected to.
var kvAttemptWait = 5 * time.Second

// write publishes value under key with a msg id of its own (and, where rev
// is given, the revision the key must still have) and sends it again,
// under the same id, when an attempt gets no answer or the connection is
// lost: the bucket's stream keeps the first copy and answers a resend with
// its revision (its duplicate window is 2 min, or the bucket's TTL). A
// resend that finds the first copy not yet stored is refused as a
// duplicate in flight and sent again; one that a single server refuses for
// the revision (it checks that before the msg id) succeeds when the key's
// last entry is the first copy. The whole is bounded by kvRequestWait.
func (k *KV) write(ctx context.Context, key string, value []byte, rev *uint64) (uint64, error) {
	if !validKey(key) {
		return 0, jetstream.ErrInvalidKey
	}
	ctx, cancel := requestContext(ctx)
	defer cancel()
	m := nats.NewMsg("$KV." + k.Name() + "." + key)
	m.Data = value
	m.Header.Set(jetstream.MsgIDHeader, nuid.Next())
	if rev != nil {
		m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(*rev, 10))
	}
	var seq uint64
	sent := 0
	err := askAgain(ctx, kvAttemptWait, func(actx context.Context) error {
		sent++
		ack, err := k.js.PublishMsg(actx, m, noLibRetry)
		if err == nil {
			seq = ack.Sequence
			return nil
		}
		if sent > 1 && wrongRevision(err) {
			// A single server checks the revision before the msg id: the
			// key's last revision may be this write's first copy.
			if last, ok := k.lastWrittenBy(ctx, m); ok {
				seq = last
				return nil
			}
		}
		return err
	})
	return seq, err
}

// validKey is jetstream's rule for a key, which its Put checks and write,
// publishing on the key's subject itself, must check too.
func validKey(key string) bool {
	return key != "" && key[0] != '.' && key[len(key)-1] != '.' && keyChars.MatchString(key)
}

var keyChars = regexp.MustCompile(`^[-/_=\.a-zA-Z0-9]+$`)

// lastWrittenBy reports the revision of key's last entry when m (its msg
// id) wrote it.
func (k *KV) lastWrittenBy(ctx context.Context, m *nats.Msg) (uint64, bool) {
	actx, cancel := context.WithTimeout(ctx, kvAttemptWait)
	defer cancel()
	st, err := k.js.Stream(actx, "KV_"+k.Name())
	if err != nil {
		return 0, false
	}
	last, err := st.GetLastMsgForSubject(actx, m.Subject)
	if err != nil || last.Header.Get(jetstream.MsgIDHeader) != m.Header.Get(jetstream.MsgIDHeader) {
		return 0, false
	}
	return last.Sequence, true
}

// errCodeDuplicateInFlight is nats-server's
// JSStreamDuplicateMessageConflict (10158): a msg id whose first copy is
// still being stored.
const errCodeDuplicateInFlight jetstream.ErrorCode = 10158

// wrongRevision tells a write refused because the key's revision was not
// the one it expected.
func wrongRevision(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) ||
		(errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == errCodeWrongLastSequenceConstant))
}

// createWindow is how many creates CreateMany has in flight at once.
const createWindow = 512

// CreateMany is Create of many keys with one value, pipelined: the creates
// are published without waiting for each answer (a window at a time), so
// a batch of keys costs about one round trip per window, not one per key.
// created[i] reports whether keys[i] was created by this call; false means
// it existed. A key whose last revision is a delete is created through
// Create (which takes the revision of the delete).
func (k *KV) CreateMany(ctx context.Context, keys []string, value []byte) ([]bool, error) {
	created := make([]bool, len(keys))
	for start := 0; start < len(keys); start += createWindow {
		end := min(start+createWindow, len(keys))
		futs := make([]jetstream.PubAckFuture, end-start)
		for i, key := range keys[start:end] {
			m := nats.NewMsg("$KV." + k.Name() + "." + key)
			m.Data = value
			m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, "0")
			f, err := k.js.PublishMsgAsync(m)
			if err != nil {
				return nil, fmt.Errorf("%s %s: %w", k.Name(), key, err)
			}
			futs[i] = f
		}
		for i, f := range futs {
			key := keys[start+i]
			select {
			case <-f.Ok():
				created[start+i] = true
			case err := <-f.Err():
				var apiErr *jetstream.APIError
				if !errors.As(err, &apiErr) || apiErr.ErrorCode != jetstream.JSErrCodeStreamWrongLastSequence {
					return nil, fmt.Errorf("%s %s: %w", k.Name(), key, err)
				}
				_, err = k.Create(ctx, key, value) // the key exists, or was deleted
				switch {
				case err == nil:
					created[start+i] = true
				case !errors.Is(err, ErrKeyExists):
					return nil, err
				}
			case <-ctx.Done():
				return nil, fmt.Errorf("%s: create: %w", k.Name(), ctx.Err())
			}
		}
	}
	return created, nil
}

// errCodeWrongLastSequenceConstant is nats-server's
// JSStreamWrongLastSequenceConstantErr (10164): newer servers answer a KV
// update on a stale revision with it (nats.go: ErrKeyRevisionMismatch).
const errCodeWrongLastSequenceConstant jetstream.ErrorCode = 10164

// Update writes key only when its revision is still rev (compare-and-set);
// the error wraps ErrWrongRevision when somebody wrote it in between.
func (k *KV) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	next, err := k.write(ctx, key, value, &rev)
	if wrongRevision(err) {
		return 0, fmt.Errorf("%s %s: %w: %w", k.Name(), key, ErrWrongRevision, err)
	}
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w", k.Name(), key, err)
	}
	return next, nil
}

// Delete removes key.
func (k *KV) Delete(ctx context.Context, key string) error {
	ctx, cancel := requestContext(ctx)
	defer cancel()
	if err := k.kv.Delete(ctx, key); err != nil {
		return fmt.Errorf("%s %s: %w", k.Name(), key, err)
	}
	return nil
}

// Keys lists the bucket's keys (none in an empty bucket, without error).
// A listing cut short by a lost answer is started again (see read: the
// first attempt waits kvListWait, all of them kvRequestWait).
func (k *KV) Keys(ctx context.Context) ([]string, error) {
	var keys []string
	err := k.read(ctx, kvListWait, func(ctx context.Context) error {
		keys = keys[:0]
		lister, err := k.kv.ListKeys(ctx)
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return nil
		}
		if err != nil {
			return err
		}
		defer func() { _ = lister.Stop() }()
		for key := range lister.Keys() {
			keys = append(keys, key)
		}
		return ctx.Err() // a listing stopped by its deadline is incomplete
	})
	if err != nil {
		return nil, fmt.Errorf("%s keys: %w", k.Name(), err)
	}
	return keys, nil
}

// Values returns the current entries of the keys that filter matches (a
// key, or a subject filter: "*" is every key of one token, ">" every key),
// in one pass over the bucket's stream rather than a request per key;
// deleted keys are left out. A listing cut short by a lost answer is
// started again, as Keys is.
func (k *KV) Values(ctx context.Context, filter string) ([]Entry, error) {
	var out []Entry
	err := k.read(ctx, kvListWait, func(ctx context.Context) error {
		out = out[:0]
		w, err := k.Watch(ctx, filter)
		if err != nil {
			return err
		}
		defer w.Stop()
		for {
			// A listing stopped by its deadline is incomplete: Next's error.
			e, err := w.Next(ctx)
			if err != nil || e == nil { // nil: every current value delivered
				return err
			}
			if !e.Deleted {
				out = append(out, *e)
			}
		}
	})
	if err != nil {
		return nil, fmt.Errorf("%s values of %s: %w", k.Name(), filter, err)
	}
	return out, nil
}

// kvListWait bounds the first attempt to list a bucket's keys (see read).
var kvListWait = 10 * time.Second

// Watcher follows the changes of a bucket's keys (see KV.Watch).
type Watcher struct {
	w jetstream.KeyWatcher
}

// Watch follows keys (one key, or a filter such as ">" for all of them):
// Next returns their current values, then a nil entry, then each change.
func (k *KV) Watch(ctx context.Context, keys string) (*Watcher, error) {
	w, err := k.kv.Watch(ctx, keys)
	if err != nil {
		return nil, fmt.Errorf("watch %s %s: %w", k.Name(), keys, err)
	}
	return &Watcher{w: w}, nil
}

// Next waits for the next entry. It returns nil once, when the values there
// were at Watch have all been returned; an error wrapping ErrWatchClosed
// when the watcher has stopped; ctx's error when ctx ends first.
func (w *Watcher) Next(ctx context.Context) (*Entry, error) {
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case e, ok := <-w.w.Updates():
		if !ok {
			return nil, ErrWatchClosed
		}
		if e == nil {
			return nil, nil
		}
		out := entryOf(e)
		return &out, nil
	}
}

// Stop ends the watch.
func (w *Watcher) Stop() { _ = w.w.Stop() }

// Heartbeat puts value() under key now and every every until ctx ends, then
// deletes the key: a worker's entry in lf_workers, which the bucket's TTL
// removes when the worker dies without deleting it. A failed put is logged.
func (k *KV) Heartbeat(ctx context.Context, key string, every time.Duration, value func() []byte, log zerolog.Logger) {
	put := func() {
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, err := k.Put(pctx, key, value()); err != nil && !errors.Is(err, context.Canceled) {
			log.Warn().Err(err).Msg("worker heartbeat")
		}
	}
	put()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			_ = k.Delete(dctx, key)
			cancel()
			return
		case <-t.C:
			put()
		}
	}
}
