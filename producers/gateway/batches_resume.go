package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/rs/zerolog"

	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/storage"
)

// A batch's requests are published by one gateway at a time, the holder
// of the job record's publisher lease (jobs.Job.Publisher, until
// PublisherUntil), taken and renewed by compare-and-set on the record. A
// gateway that dies while publishing stops renewing it; once it has run
// out, the next gateway to look (every gateway looks when it starts
// serving and every half lease) takes the lease and publishes the batch
// again from its first line. Publishing twice loses and adds nothing: the
// custom_id chunks are only ever extended, a request's message id
// (schemas.MsgID of job and custom_id) is dropped by the stream within its
// duplicate window, and the results sink takes each custom_id's result
// once.

// DefaultPublishLease is how long a gateway holds a batch it publishes
// without renewing the lease.
const DefaultPublishLease = 30 * time.Second

// errLostLease ends a publishing whose lease another gateway took.
var errLostLease = errors.New("publisher lease taken by another gateway")

// newPublisherID names this gateway in the leases it holds.
func newPublisherID() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	host, _ := os.Hostname()
	return fmt.Sprintf("gateway-%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}

// leaseFree reports whether a gateway may take the publisher lease of j
// at now: j is validating and nobody holds it, or its holder let it run
// out. A job nobody claimed yet is its creator's for one lease after its
// creation.
func (b *batches) leaseFree(j jobs.Job, now time.Time) bool {
	if j.Status != jobs.StatusValidating || j.Kind != jobs.KindCompletion {
		return false
	}
	until := j.PublisherUntil
	if j.Publisher == "" {
		until = time.Unix(j.CreatedAt, 0).Add(b.f.cfg.PublishLease).UnixMilli()
	}
	return now.UnixMilli() >= until
}

// claim takes the publisher lease of job id: always for the gateway that
// created it (fresh), else only when leaseFree. It reports whether this
// gateway holds the lease.
func (b *batches) claim(ctx context.Context, id string, fresh bool) (jobs.Job, bool, error) {
	held := false
	j, err := b.f.jobs.Update(ctx, id, func(j *jobs.Job) error {
		now := time.Now()
		if j.Status != jobs.StatusValidating || (!fresh && !b.leaseFree(*j, now)) {
			held = false
			return jobs.ErrSkip
		}
		held = true
		j.Publisher, j.PublisherUntil = b.id, now.Add(b.f.cfg.PublishLease).UnixMilli()
		return nil
	})
	return j, held && err == nil, err
}

// renew extends this gateway's lease on job id; errLostLease when another
// gateway took it, errCancelled when the batch is being cancelled.
func (b *batches) renew(ctx context.Context, id string) error {
	_, err := b.f.jobs.Update(ctx, id, func(j *jobs.Job) error {
		switch {
		case j.Status == jobs.StatusCancelling || j.Status.Terminal():
			return errCancelled
		case j.Publisher != b.id || j.Status != jobs.StatusValidating:
			return errLostLease
		}
		j.PublisherUntil = time.Now().Add(b.f.cfg.PublishLease).UnixMilli()
		return nil
	})
	return err
}

// resumeLoop resumes, until ctx ends, every batch left validating by a
// gateway that stopped publishing it: now, then every half lease.
func (b *batches) resumeLoop(ctx context.Context) {
	t := time.NewTicker(max(b.f.cfg.PublishLease/2, 100*time.Millisecond))
	defer t.Stop()
	for {
		if err := b.resumeStale(ctx); err != nil && ctx.Err() == nil {
			b.f.g.log.Warn().Err(err).Msg("look for batches to resume")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// resumeStale starts publishing each batch whose lease is free.
func (b *batches) resumeStale(ctx context.Context) error {
	js, err := b.f.jobs.List(ctx)
	if err != nil {
		return err
	}
	now := time.Now()
	for _, j := range js {
		if !b.leaseFree(j, now) {
			continue
		}
		var rec batchRecord
		if err := readSmall(ctx, b.f.obj, storage.Batch(j.ID), &rec); err != nil {
			if !errors.Is(err, storage.ErrNotFound) { // not found: a CLI job, resumed by submit --job-id
				b.f.g.log.Warn().Err(err).Str("job", j.ID).Msg("read batch record")
			}
			continue
		}
		j, held, err := b.claim(ctx, j.ID, false)
		if err != nil {
			b.f.g.log.Warn().Err(err).Str("job", j.ID).Msg("claim batch")
			continue
		}
		if !held {
			continue // another gateway was first
		}
		l := b.f.g.log.With().Str("job", j.ID).Logger()
		l.Info().Msg("resuming a batch whose publishing did not finish")
		go b.resume(ctx, j, rec, l)
	}
	return nil
}

// resume validates a claimed batch's file again (its rows, and whether it
// changed) and publishes it.
func (b *batches) resume(ctx context.Context, j jobs.Job, rec batchRecord, l zerolog.Logger) {
	scan, err := b.validate(ctx, rec.InputFileID, rec.Endpoint, false)
	if err == nil && len(scan.errs) > 0 {
		_, err = b.f.jobs.Update(ctx, j.ID, func(j *jobs.Job) error {
			for _, e := range scan.errs {
				j.AddError(e)
			}
			return j.SetStatus(jobs.StatusFailed, time.Now())
		})
	}
	if err != nil {
		if _, ferr := b.f.jobs.Fail(ctx, j.ID, jobs.ErrorReport{Code: "publish_failed", Message: err.Error()}); ferr != nil && !errors.Is(ferr, jobs.ErrIllegalTransition) {
			l.Error().Err(ferr).Msg("fail job")
		}
		return
	}
	if len(scan.errs) == 0 {
		b.submit(ctx, j, rec.InputFileID, scan.rows, l)
	}
}
