package datasetsink

import (
	"context"
	"fmt"
	"strconv"

	"github.com/rs/zerolog"

	"github.com/largeforge/largeforge/dataset"
	"github.com/largeforge/largeforge/dataset/read"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/schemas"
)

// RawHandler validates single records that any NATS client publishes to
// lf.data.<dataset>.raw, exactly as a file's records are: accepted ones are
// gathered into one shard per dataset and fetched batch, rejected ones become
// reject records on the dead-letter stream. A message's format is its Lf-Format
// header when set, otherwise it is told from its keys.
type RawHandler struct {
	bus        *pipeline.Bus
	log        zerolog.Logger
	metrics    *dataset.Metrics
	shardBytes int // canonical bytes per shard, and so per record
}

// NewRawHandler returns the handler; run it with a pipeline consumer on lf.data.*.raw.
func NewRawHandler(bus *pipeline.Bus, log zerolog.Logger, m *dataset.Metrics) (*RawHandler, error) {
	if bus == nil {
		return nil, fmt.Errorf("%w: nil bus", ErrInvalidOption)
	}
	if m == nil {
		m, _ = dataset.NewMetrics(nil)
	}
	return &RawHandler{bus: bus, log: log, metrics: m, shardBytes: read.ShardLimit(bus, dataset.DefaultShardBytes)}, nil
}

// Handle implements pipeline.Handler.
func (h *RawHandler) Handle(ctx context.Context, msgs []pipeline.Msg) []error {
	errs := make([]error, len(msgs))
	type group struct {
		ds, subject string
		format      schemas.Format
		builder     *dataset.ShardBuilder
		idx         []int
	}
	groups := map[string]*group{}
	var order []string
	for i, m := range msgs {
		ds, err := datasetOf(m.Subject)
		if err != nil {
			continue // a stray subject: dead-lettered by the strays consumer, never a dataset
		}
		row := read.Row{Line: int64(m.Sequence), Data: m.Data}
		source := m.Subject
		f, err := schemas.ParseFormat(m.Header.Get(schemas.HeaderFormat))
		if err != nil {
			var ok bool
			if f, ok = schemas.DetectFormat(m.Data); !ok {
				errs[i] = h.reject(ctx, ds, read.Reject{Source: source, Line: row.Line, Rule: schemas.RuleFormat, Original: row.Data,
					Error: "cannot tell the record's format from its keys (alpaca, sharegpt or dpo); set the Lf-Format header"})
				continue
			}
		}
		items := read.Decode(source, f, []read.Row{row}, h.shardBytes)
		if it := items[0]; it.Rej != nil {
			errs[i] = h.reject(ctx, ds, *it.Rej)
			continue
		}
		h.metrics.Accepted.WithLabelValues(ds).Inc()
		key := ds + "/" + string(f)
		g := groups[key]
		if g == nil {
			g = &group{ds: ds, subject: source, format: f, builder: dataset.NewShardBuilder(f, h.shardBytes)}
			groups[key] = g
			order = append(order, key)
		}
		a := items[0].Acc
		if g.builder.Full(a.Size) {
			if err := h.publish(ctx, g.ds, g.format, g.builder); err != nil {
				for _, j := range g.idx {
					errs[j] = err
				}
			}
			g.idx = g.idx[:0]
		}
		g.builder.Add(a.Record, a.ID, a.Size)
		g.idx = append(g.idx, i)
	}
	for _, key := range order {
		g := groups[key]
		if g.builder.Len() == 0 {
			continue
		}
		if err := h.publish(ctx, g.ds, g.format, g.builder); err != nil {
			for _, j := range g.idx {
				errs[j] = err
			}
		}
	}
	return errs
}

func (h *RawHandler) publish(ctx context.Context, ds string, f schemas.Format, b *dataset.ShardBuilder) error {
	subj, err := pipeline.DatasetShardSubject(ds)
	if err != nil {
		return pipeline.Invalid("dataset name", err)
	}
	rows := b.Len()
	data, msgID, err := b.Encode(ds)
	if err != nil {
		return err
	}
	hdr := pipeline.Header{}
	hdr.Set(schemas.HeaderFormat, string(f))
	hdr.Set(schemas.HeaderSource, "nats:"+pipeline.StreamDatasets)
	hdr.Set(schemas.HeaderRun, schemas.RawRun)
	hdr.Set(schemas.HeaderRows, strconv.Itoa(rows))
	if _, err := h.bus.Publish(ctx, subj, data, msgID, hdr); err != nil {
		return fmt.Errorf("publish shard: %w", err) // transient: the raw records are redelivered
	}
	h.metrics.Shards.WithLabelValues(ds).Inc()
	return nil
}

// reject publishes the reject record; the raw message is then acked, since its
// reject record is its durable outcome.
func (h *RawHandler) reject(ctx context.Context, ds string, r read.Reject) error {
	h.metrics.Rejected.WithLabelValues(ds, r.Rule).Inc()
	r.Source = "nats:" + pipeline.StreamDatasets
	rec, msgID := read.RejectRecord(ds, schemas.RawRun, r)
	if err := h.bus.PublishDLQ(ctx, schemas.StageIngest, ds, rec, msgID); err != nil {
		return fmt.Errorf("publish reject: %w", err)
	}
	return nil
}
