package pipeline

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Reads from a stream's leader. jetstream's KV Get and object GetInfo are
// direct gets, which any replica of a clustered stream may answer, and a
// replica may not yet hold a write acknowledged a moment ago (a quorum
// stored it). A reader that must see every acknowledged write (the parts a
// finalizer merges) asks the leader instead, through the STREAM.MSG.GET
// API, which only the leader answers.

// storedMsg is a message as the STREAM.MSG.GET API returns it.
type storedMsg struct {
	Subject  string    `json:"subject"`
	Sequence uint64    `json:"seq"`
	Header   []byte    `json:"hdrs,omitempty"`
	Data     []byte    `json:"data,omitempty"`
	Time     time.Time `json:"time"`
}

// leaderLast returns the last message of stream on subject as the stream's
// leader has it; found is false when there is none. An answer lost (a
// cluster electing the stream's leader) is asked again, as KV reads are.
func leaderLast(ctx context.Context, nc *nats.Conn, stream, subject string) (msg storedMsg, found bool, err error) {
	req, err := json.Marshal(struct {
		LastBySubj string `json:"last_by_subj"`
	}{subject})
	if err != nil {
		return storedMsg{}, false, err
	}
	ctx, cancel := requestContext(ctx)
	defer cancel()
	err = askAgain(ctx, kvAttemptWait, func(ctx context.Context) error {
		resp, err := nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET."+stream, req)
		if err != nil {
			return err
		}
		var r struct {
			Error   *jetstream.APIError `json:"error"`
			Message *storedMsg          `json:"message"`
		}
		if err := json.Unmarshal(resp.Data, &r); err != nil {
			return fmt.Errorf("message get answer: %w", err)
		}
		switch {
		case r.Error != nil && r.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound:
			found = false
			return nil
		case r.Error != nil:
			return r.Error
		case r.Message == nil:
			return errors.New("message get answer without a message")
		}
		msg, found = *r.Message, true
		return nil
	})
	if err != nil {
		return storedMsg{}, false, fmt.Errorf("last message of %s on %s: %w", stream, subject, err)
	}
	return msg, found, nil
}

// LeaderInfo is Info read from the store's stream leader: it sees every
// object whose put was acknowledged, where Info, answered by any replica
// of a clustered store, may not see one stored a moment ago. A missing or
// deleted object wraps ErrObjectNotFound.
func (o *Objects) LeaderInfo(ctx context.Context, name string) (ObjectInfo, error) {
	subject := "$O." + o.bucket + ".M." + base64.URLEncoding.EncodeToString([]byte(name))
	m, found, err := leaderLast(ctx, o.js.Conn(), "OBJ_"+o.bucket, subject)
	if err != nil {
		return ObjectInfo{}, fmt.Errorf("object %s/%s: %w", o.bucket, name, err)
	}
	var info jetstream.ObjectInfo
	if found {
		if err := json.Unmarshal(m.Data, &info); err != nil {
			return ObjectInfo{}, fmt.Errorf("object %s/%s: %w: %w", o.bucket, name, jetstream.ErrBadObjectMeta, err)
		}
	}
	if !found || info.Deleted {
		return ObjectInfo{}, fmt.Errorf("object %s/%s: %w", o.bucket, name, ErrObjectNotFound)
	}
	info.ModTime = m.Time
	return objectInfoOf(&info), nil
}

// LeaderHas reports whether key holds a value (neither absent, deleted nor
// purged), read from the bucket's stream leader: unlike Get, answered by
// any replica, it sees every write that was acknowledged.
func (k *KV) LeaderHas(ctx context.Context, key string) (bool, error) {
	_, found, err := k.LeaderGet(ctx, key)
	return found, err
}

// LeaderGet is key's value as the bucket's stream leader has it (see
// LeaderHas); found is false when the key is absent, deleted or purged.
func (k *KV) LeaderGet(ctx context.Context, key string) (value []byte, found bool, err error) {
	if !validKey(key) {
		return nil, false, fmt.Errorf("%s %q: %w", k.Name(), key, jetstream.ErrInvalidKey)
	}
	m, found, err := leaderLast(ctx, k.js.Conn(), "KV_"+k.Name(), "$KV."+k.Name()+"."+key)
	if err != nil {
		return nil, false, fmt.Errorf("%s %s: %w", k.Name(), key, err)
	}
	if !found {
		return nil, false, nil
	}
	if len(m.Header) > 0 {
		hdr, err := nats.DecodeHeadersMsg(m.Header)
		if err != nil {
			return nil, false, fmt.Errorf("%s %s: headers: %w", k.Name(), key, err)
		}
		if op := hdr.Get("KV-Operation"); op == "DEL" || op == "PURGE" {
			return nil, false, nil
		}
	}
	return m.Data, true, nil
}
