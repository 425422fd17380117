package dataset

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sync"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"

	"github.com/largeforge/largeforge/schemas"
)

// DefaultShardBytes keeps an encoded shard well under NATS's 1 MiB max_payload:
// it bounds the canonical size of the records; the IPC framing adds little and
// S2 shrinks text (at worst it adds a few bytes per 64 KiB).
const DefaultShardBytes = 768 << 10

// ShardBuilder gathers validated records of one format into a shard.
type ShardBuilder struct {
	format   schemas.Format
	maxBytes int
	records  []schemas.Record
	ids      []string
	size     int
}

// NewShardBuilder returns a builder that reports Full once maxBytes of canonical
// record bytes are gathered (DefaultShardBytes when maxBytes <= 0).
func NewShardBuilder(f schemas.Format, maxBytes int) *ShardBuilder {
	if maxBytes <= 0 {
		maxBytes = DefaultShardBytes
	}
	return &ShardBuilder{format: f, maxBytes: maxBytes}
}

// Add appends one record; size is its canonical size in bytes.
func (b *ShardBuilder) Add(r schemas.Record, id string, size int) {
	b.records = append(b.records, r)
	b.ids = append(b.ids, id)
	b.size += size
}

// Full reports whether the shard should be sent before the next record of size next.
func (b *ShardBuilder) Full(next int) bool { return len(b.records) > 0 && b.size+next > b.maxBytes }

// Format is the format of the records gathered.
func (b *ShardBuilder) Format() schemas.Format { return b.format }

// Len is the number of records gathered.
func (b *ShardBuilder) Len() int { return len(b.records) }

// IDs returns the record ids gathered so far.
func (b *ShardBuilder) IDs() []string { return b.ids }

// Encode returns the shard's bytes and its message id, then empties the builder.
func (b *ShardBuilder) Encode(datasetName string) (data []byte, msgID string, err error) {
	data, err = EncodeShard(b.format, b.records, b.ids)
	if err != nil {
		return nil, "", err
	}
	msgID = ShardID(datasetName, b.ids)
	b.records = b.records[:0]
	b.ids = b.ids[:0]
	b.size = 0
	return data, msgID, nil
}

// Take returns the records and ids gathered and empties the builder (the
// returned slices are the caller's), so that encoding can run elsewhere.
func (b *ShardBuilder) Take() ([]schemas.Record, []string) {
	recs, ids := b.records, b.ids
	b.records, b.ids, b.size = nil, nil, 0
	return recs, ids
}

// ShardID is the Nats-Msg-Id of a shard: the dataset and the sha256 of its record ids.
func ShardID(datasetName string, ids []string) string {
	h := sha256.New()
	for _, id := range ids {
		h.Write([]byte(id))
		h.Write([]byte{'\n'})
	}
	return datasetName + "/" + hex.EncodeToString(h.Sum(nil))
}

// A shard is one Arrow IPC stream (schema + record batch) compressed as a
// whole as one S2 block (github.com/klauspost/compress/s2): S2 encodes
// several times faster than zstd's fastest level and decodes faster still,
// and ingest and the sink compress and decompress every byte of a dataset
// once each. Shards published before were zstd frames; DecodeShard tells
// them apart by zstd's magic number (an S2 block starts with the uvarint of
// its decoded length, never those four bytes for an IPC stream).
var decoders = sync.Pool{New: func() any {
	d, _ := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(64<<20))
	return d
}}

// zstdMagic starts every zstd frame.
var zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}

// maxShardRaw bounds the decoded size of a shard (as zstd's decoder
// memory did): a block claiming more is refused before it is allocated.
const maxShardRaw = 64 << 20

// EncodeShard writes records as one Arrow IPC stream, compressed with S2.
func EncodeShard(f schemas.Format, records []schemas.Record, ids []string) ([]byte, error) {
	if len(records) != len(ids) {
		return nil, fmt.Errorf("encode shard: %d records but %d ids", len(records), len(ids))
	}
	schema := schemas.ArrowSchema(f)
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	reserveShard(b, f, records, ids)
	for i, r := range records {
		if err := schemas.AppendRecordWithID(b, r, ids[i]); err != nil {
			return nil, fmt.Errorf("encode shard: %w", err)
		}
	}
	rec := b.NewRecordBatch()
	defer rec.Release()

	sb := scratch.Get().(*shardScratch)
	defer scratch.Put(sb)
	sb.ipc.Reset()
	w := ipc.NewWriter(&sb.ipc, ipc.WithSchema(schema))
	if err := w.Write(rec); err != nil {
		return nil, fmt.Errorf("encode shard: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("encode shard: %w", err)
	}
	// S2 needs room for the worst case (more than the input); the shard
	// kept (in ingest's publish window) is a copy of its own size.
	sb.s2 = s2.Encode(sb.s2[:cap(sb.s2)], sb.ipc.Bytes())
	return bytes.Clone(sb.s2), nil
}

// reserveShard sizes the columns of b for records at once, rather than
// growing them (copying and clearing) record after record.
func reserveShard(b *array.RecordBuilder, f schemas.Format, records []schemas.Record, ids []string) {
	b.Reserve(len(records))
	var sizes [4]int
	for i, r := range records {
		sizes[0] += len(ids[i])
		switch f {
		case schemas.FormatAlpaca:
			sizes[1] += len(r.Alpaca.Instruction)
			sizes[2] += len(r.Alpaca.Input)
			sizes[3] += len(r.Alpaca.Output)
		case schemas.FormatDPO:
			sizes[1] += len(r.DPO.Prompt)
			sizes[2] += len(r.DPO.Chosen)
			sizes[3] += len(r.DPO.Rejected)
		}
	}
	for k, n := range sizes {
		if sb, ok := fieldOf(b, k).(*array.StringBuilder); ok && n > 0 {
			sb.ReserveData(n)
		}
	}
}

// fieldOf is b's k-th field builder, nil past the last.
func fieldOf(b *array.RecordBuilder, k int) array.Builder {
	if k >= len(b.Fields()) {
		return nil
	}
	return b.Field(k)
}

// shardScratch is the reused memory of EncodeShard: the IPC stream and
// its S2 block before the copy returned.
type shardScratch struct {
	ipc bytes.Buffer
	s2  []byte
}

var scratch = sync.Pool{New: func() any { return new(shardScratch) }}

// decompressShard returns the Arrow IPC stream of a shard: an S2 block, or
// a zstd frame (shards of earlier versions).
func decompressShard(data []byte) ([]byte, error) {
	if bytes.HasPrefix(data, zstdMagic) {
		dec := decoders.Get().(*zstd.Decoder)
		defer decoders.Put(dec)
		raw, err := dec.DecodeAll(data, nil)
		if err != nil {
			return nil, fmt.Errorf("%w: zstd: %v", ErrBadShard, err)
		}
		return raw, nil
	}
	n, err := s2.DecodedLen(data)
	if err != nil {
		return nil, fmt.Errorf("%w: s2: %v", ErrBadShard, err)
	}
	if n > maxShardRaw {
		return nil, fmt.Errorf("%w: s2: %d bytes decoded is over %d", ErrBadShard, n, maxShardRaw)
	}
	raw, err := s2.Decode(nil, data)
	if err != nil {
		return nil, fmt.Errorf("%w: s2: %v", ErrBadShard, err)
	}
	return raw, nil
}

// DecodeShard reads the records and ids of a shard of format f.
func DecodeShard(f schemas.Format, data []byte) (records []schemas.Record, ids []string, err error) {
	raw, err := decompressShard(data)
	if err != nil {
		return nil, nil, err
	}
	r, err := ipc.NewReader(bytes.NewReader(raw), ipc.WithAllocator(memory.DefaultAllocator))
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrBadShard, err)
	}
	defer r.Release()
	for r.Next() {
		recs, rids, err := schemas.RecordsFromArrow(f, r.RecordBatch())
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %v", ErrBadShard, err)
		}
		records = append(records, recs...)
		ids = append(ids, rids...)
	}
	if err := r.Err(); err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrBadShard, err)
	}
	return records, ids, nil
}
