package dataset

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"

	"github.com/largeforge/largeforge/schemas"
	"github.com/largeforge/largeforge/storage"
)

func sampleRecords() map[schemas.Format][]schemas.Record {
	return map[schemas.Format][]schemas.Record{
		schemas.FormatAlpaca: {
			{Format: schemas.FormatAlpaca, Alpaca: schemas.Alpaca{Instruction: "i1", Input: "", Output: "o1"}},
			{Format: schemas.FormatAlpaca, Alpaca: schemas.Alpaca{Instruction: "ünïcode ✓", Input: "x", Output: "o2"}},
		},
		schemas.FormatShareGPT: {
			{Format: schemas.FormatShareGPT, ShareGPT: schemas.ShareGPT{Conversations: []schemas.Turn{{From: "system", Value: "s"}, {From: "human", Value: "h"}, {From: "gpt", Value: "g"}}}},
		},
		schemas.FormatDPO: {
			{Format: schemas.FormatDPO, DPO: schemas.DPO{Prompt: "p", Chosen: "c", Rejected: "r"}},
		},
	}
}

func idsOf(recs []schemas.Record) []string {
	ids := make([]string, len(recs))
	for i, r := range recs {
		ids[i] = r.ID()
	}
	return ids
}

func TestShardRoundTrip(t *testing.T) {
	for f, recs := range sampleRecords() {
		t.Run(string(f), func(t *testing.T) {
			ids := idsOf(recs)
			data, err := EncodeShard(f, recs, ids)
			if err != nil {
				t.Fatal(err)
			}
			got, gotIDs, err := DecodeShard(f, data)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, recs) || !reflect.DeepEqual(gotIDs, ids) {
				t.Fatalf("round trip: got %+v %v, want %+v %v", got, gotIDs, recs, ids)
			}
		})
	}
}

// TestShardEncodings: shards are S2 blocks; a zstd shard of an earlier
// version still on the bus decodes to the same records, and a block that
// claims more than a shard may hold is refused before it is allocated.
func TestShardEncodings(t *testing.T) {
	f, recs := schemas.FormatAlpaca, sampleRecords()[schemas.FormatAlpaca]
	ids := idsOf(recs)
	data, err := EncodeShard(f, recs, ids)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := s2.Decode(nil, data)
	if err != nil {
		t.Fatalf("a shard is not an S2 block: %v", err)
	}
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	old := enc.EncodeAll(raw, nil)
	got, gotIDs, err := DecodeShard(f, old)
	if err != nil || !reflect.DeepEqual(got, recs) || !reflect.DeepEqual(gotIDs, ids) {
		t.Fatalf("zstd shard: %+v %v %v", got, gotIDs, err)
	}
	huge := binary.AppendUvarint(nil, maxShardRaw+1)
	if _, _, err := DecodeShard(f, append(huge, 0)); !errors.Is(err, ErrBadShard) {
		t.Fatalf("a block of %d bytes: %v, want ErrBadShard", maxShardRaw+1, err)
	}
}

func TestShardBuilder(t *testing.T) {
	b := NewShardBuilder(schemas.FormatAlpaca, 100)
	r := schemas.Record{Format: schemas.FormatAlpaca, Alpaca: schemas.Alpaca{Instruction: "i", Output: "o"}}
	if b.Full(60) {
		t.Fatal("an empty builder is never full")
	}
	b.Add(r, "a", 60)
	if !b.Full(60) {
		t.Fatal("60+60 bytes should not fit in 100")
	}
	_, id1, err := b.Encode("ds")
	if err != nil {
		t.Fatal(err)
	}
	if b.Len() != 0 || id1 != ShardID("ds", []string{"a"}) {
		t.Fatalf("after Encode: len %d id %s", b.Len(), id1)
	}
}

func TestPartRoundTrip(t *testing.T) {
	dir := t.TempDir()
	for f, recs := range sampleRecords() {
		t.Run(string(f), func(t *testing.T) {
			ids := idsOf(recs)
			path := filepath.Join(dir, string(f)+".parquet")
			info, err := WritePart(path, f, recs, ids, []string{"ds/shard1"})
			if err != nil {
				t.Fatal(err)
			}
			gf, got, gotIDs, err := ReadPart(path)
			if err != nil {
				t.Fatal(err)
			}
			if gf != f || !reflect.DeepEqual(got, recs) || !reflect.DeepEqual(gotIDs, ids) {
				t.Fatalf("round trip: %s %+v %v", gf, got, gotIDs)
			}
			meta, err := ReadPartMeta(path)
			if err != nil {
				t.Fatal(err)
			}
			if meta.SHA256 != info.SHA256 || meta.Rows != int64(len(recs)) || !reflect.DeepEqual(meta.Shards, []string{"ds/shard1"}) {
				t.Fatalf("meta %+v, info %+v", meta, info)
			}
		})
	}
}

// FuzzDecodeShard: shards come from the bus, where any client may publish.
func FuzzDecodeShard(f *testing.F) {
	for fm, recs := range sampleRecords() {
		data, _ := EncodeShard(fm, recs, idsOf(recs))
		f.Add(string(fm), data)
	}
	f.Add("alpaca", []byte("not a shard"))
	f.Fuzz(func(t *testing.T, format string, data []byte) {
		fm, err := schemas.ParseFormat(format)
		if err != nil {
			return
		}
		recs, ids, err := DecodeShard(fm, data)
		if err != nil {
			if !errors.Is(err, ErrBadShard) {
				t.Fatalf("error %v does not wrap ErrBadShard", err)
			}
			return
		}
		if len(recs) != len(ids) {
			t.Fatalf("%d records, %d ids", len(recs), len(ids))
		}
	})
}

// TestStoredDataset: parts published to a store, the manifest, and the
// records read back in part order.
func TestStoredDataset(t *testing.T) {
	ctx := context.Background()
	store, err := storage.NewLocal(storage.DirsUnder(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	parts, err := storage.DatasetParts(store, "ds")
	if err != nil {
		t.Fatal(err)
	}
	recs := sampleRecords()[schemas.FormatAlpaca]
	var infos []PartInfo
	for i, r := range recs {
		info, err := PublishPart(ctx, parts, schemas.FormatAlpaca, []schemas.Record{r}, []string{r.ID()}, []string{fmt.Sprintf("ds/shard%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		infos = append(infos, info)
	}
	if infos[0].File != "part-00000.parquet" || infos[1].File != "part-00001.parquet" {
		t.Fatalf("parts %+v", infos)
	}
	meta, err := LoadPartMeta(ctx, store, storage.Dataset("ds")+infos[1].File)
	if err != nil {
		t.Fatal(err)
	}
	if meta.SHA256 != infos[1].SHA256 || meta.Bytes != infos[1].Bytes || !reflect.DeepEqual(meta.IDs, []string{recs[1].ID()}) {
		t.Errorf("meta %+v, info %+v", meta, infos[1])
	}
	if _, err := LoadManifest(ctx, store, "ds"); !IsNotExist(err) {
		t.Errorf("no manifest yet: err = %v", err)
	}
	m := NewManifest("ds", schemas.FormatAlpaca, time.Unix(0, 0))
	m.Parts = infos
	if err := SaveManifest(ctx, store, m); err != nil {
		t.Fatal(err)
	}
	if got, err := LoadManifest(ctx, store, "ds"); err != nil || len(got.Parts) != 2 || got.Format != schemas.FormatAlpaca {
		t.Errorf("manifest %+v, %v", got, err)
	}
	r, err := NewRecords(store, "ds")
	if err != nil {
		t.Fatal(err)
	}
	got, err := r.ReadRecords(ctx)
	if err != nil || !reflect.DeepEqual(got, recs) {
		t.Errorf("records %+v, %v", got, err)
	}
	if _, err := NewRecords(store, "../x"); !errors.Is(err, ErrInvalidName) {
		t.Errorf("bad name: err = %v", err)
	}
	empty, _ := NewRecords(store, "none")
	if got, err := empty.ReadRecords(ctx); err != nil || len(got) != 0 {
		t.Errorf("missing dataset: %d records, %v", len(got), err)
	}
}
