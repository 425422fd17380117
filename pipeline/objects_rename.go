package pipeline

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// Rename gives the object from the name to, moving no chunk: to's meta
// message names from's chunks, and from is left as a deleted object. An
// object already named to is replaced (its chunks purged, as Put does).
// It needs only the permissions of Put ($O.<bucket>.> and the stream's
// info), unlike jetstream's UpdateMeta, which purges the old meta.
//
// from is marked deleted first, then to is published: a rename cut short
// between the two leaves from's chunks unreferenced (space, not a second
// name for the same chunks, which a later Delete of either name would
// break for the other). A missing from wraps ErrObjectNotFound.
func (o *Objects) Rename(ctx context.Context, from, to string) (ObjectInfo, error) {
	fail := func(err error) (ObjectInfo, error) {
		return ObjectInfo{}, fmt.Errorf("rename object %s/%s to %s: %w", o.bucket, from, to, err)
	}
	if from == "" || to == "" || from == to {
		return fail(ErrInvalidOption)
	}
	in, err := o.getInfo(ctx, from)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return fail(ErrObjectNotFound)
	}
	if err != nil {
		return fail(err)
	}
	if in.Opts != nil && in.Opts.Link != nil {
		return fail(fmt.Errorf("a link: %w", ErrInvalidOption))
	}
	old, err := o.getInfo(ctx, to, jetstream.GetObjectInfoShowDeleted())
	if err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		return fail(err)
	}
	// The tombstone names chunks that were never written, so a purge of
	// them (a Delete that reads it) touches nothing.
	tomb := &jetstream.ObjectInfo{
		ObjectMeta: jetstream.ObjectMeta{Name: from},
		Bucket:     o.bucket,
		NUID:       nuid.Next(),
		Deleted:    true,
	}
	if err := o.publishMeta(ctx, tomb); err != nil {
		return fail(err)
	}
	moved := *in
	moved.Name, moved.ModTime = to, time.Time{}
	if err := o.publishMeta(ctx, &moved); err != nil {
		return fail(err)
	}
	moved.ModTime = time.Now().UTC()
	if old != nil && !old.Deleted && old.NUID != in.NUID {
		o.purge(fmt.Sprintf("$O.%s.C.%s", o.bucket, old.NUID))
	}
	return objectInfoOf(&moved), nil
}
