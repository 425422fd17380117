package dataset

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"

	"github.com/parquet-go/parquet-go"
	pqzstd "github.com/parquet-go/parquet-go/compress/zstd"

	"github.com/largeforge/largeforge/schemas"
	"github.com/largeforge/largeforge/storage"
)

// Parquet key-value metadata written into every part.
const (
	metaFormat = "largeforge.format"
	metaShards = "largeforge.shards" // JSON list of the shard message ids the part holds
)

// partCodec compresses the pages of parts: zstd at its fastest level, which
// keeps most of the size benefit at a fraction of the default level's cost.
var partCodec = &pqzstd.Codec{Level: pqzstd.SpeedFastest}

type alpacaRow struct {
	ID          string `parquet:"id"`
	Instruction string `parquet:"instruction"`
	Input       string `parquet:"input"`
	Output      string `parquet:"output"`
}

type turnRow struct {
	From   string `parquet:"from"`
	Value  string `parquet:"value"`
	Weight *int8  `parquet:"weight,optional"` // schemas.Turn.Weight: 0 kept out of the loss
}

type sharegptRow struct {
	ID            string    `parquet:"id"`
	Conversations []turnRow `parquet:"conversations,list"`
}

type dpoRow struct {
	ID       string `parquet:"id"`
	Prompt   string `parquet:"prompt"`
	Chosen   string `parquet:"chosen"`
	Rejected string `parquet:"rejected"`
}

type idRow struct {
	ID string `parquet:"id"`
}

// PartName is the file name of a dataset's part number n.
func PartName(n int) string { return storage.DatasetPartName(n) }

// PartInfo describes one written part, as the manifest lists it.
type PartInfo struct {
	File   string   `json:"file"`
	Rows   int64    `json:"rows"`
	Bytes  int64    `json:"bytes"`
	SHA256 string   `json:"sha256"`
	Shards []string `json:"-"`
}

// PublishPart publishes records as the next of parts (see storage.Parts),
// a zstd Parquet object that no reader sees partially. shardIDs are the
// shard message ids the part holds, kept in its metadata so that a
// redelivered shard is recognised after a crash.
func PublishPart(ctx context.Context, parts *storage.Parts, f schemas.Format, records []schemas.Record, ids []string, shardIDs []string) (PartInfo, error) {
	return publishPart(func(write func(io.Writer) error) (storage.Info, error) {
		return parts.Publish(ctx, write)
	}, f, records, ids, shardIDs)
}

// CreatePart is PublishPart under part number n, claimed before (a
// storage.PartIndex claim); a number taken is storage.ErrExists.
func CreatePart(ctx context.Context, parts *storage.Parts, n int, f schemas.Format, records []schemas.Record, ids []string, shardIDs []string) (PartInfo, error) {
	return publishPart(func(write func(io.Writer) error) (storage.Info, error) {
		return parts.Create(ctx, n, write)
	}, f, records, ids, shardIDs)
}

func publishPart(publish func(func(io.Writer) error) (storage.Info, error), f schemas.Format, records []schemas.Record, ids []string, shardIDs []string) (PartInfo, error) {
	if len(records) != len(ids) {
		return PartInfo{}, fmt.Errorf("publish part: %d records but %d ids", len(records), len(ids))
	}
	info, err := publish(func(w io.Writer) error { return EncodePart(w, f, records, ids, shardIDs) })
	if err != nil {
		return PartInfo{}, fmt.Errorf("publish part: %w", err)
	}
	return PartInfo{File: path.Base(info.Key), Rows: int64(len(records)), Bytes: info.Size, SHA256: info.SHA256, Shards: shardIDs}, nil
}

// WritePart writes a part to a file of its own at path, replacing it (the
// ingest benchmark's floor and tests; sinks use PublishPart).
func WritePart(path string, f schemas.Format, records []schemas.Record, ids []string, shardIDs []string) (PartInfo, error) {
	if len(records) != len(ids) {
		return PartInfo{}, fmt.Errorf("write part %s: %d records but %d ids", path, len(records), len(ids))
	}
	dir := storage.Dirs{Datasets: filepath.Dir(path)}
	local, err := storage.NewLocal(dir)
	if err != nil {
		return PartInfo{}, err
	}
	key := storage.KindDatasets + "/" + filepath.Base(path)
	info, err := local.Put(context.Background(), key, func(w io.Writer) error { return EncodePart(w, f, records, ids, shardIDs) })
	if err != nil {
		return PartInfo{}, fmt.Errorf("write part: %w", err)
	}
	return PartInfo{File: filepath.Base(path), Rows: int64(len(records)), Bytes: info.Size, SHA256: info.SHA256, Shards: shardIDs}, nil
}

// EncodePart writes records, with their ids, as one zstd Parquet file of
// format f, with shardIDs in its metadata.
func EncodePart(w io.Writer, f schemas.Format, records []schemas.Record, ids []string, shardIDs []string) error {
	if len(records) != len(ids) {
		return fmt.Errorf("encode part: %d records but %d ids", len(records), len(ids))
	}
	shardJSON, err := json.Marshal(shardIDs)
	if err != nil {
		return err
	}
	opts := []parquet.WriterOption{
		parquet.Compression(partCodec),
		parquet.KeyValueMetadata(metaFormat, string(f)),
		parquet.KeyValueMetadata(metaShards, string(shardJSON)),
	}
	switch f {
	case schemas.FormatAlpaca:
		rows := make([]alpacaRow, len(records))
		for i, r := range records {
			rows[i] = alpacaRow{ID: ids[i], Instruction: r.Alpaca.Instruction, Input: r.Alpaca.Input, Output: r.Alpaca.Output}
		}
		return writeRows(w, rows, opts)
	case schemas.FormatShareGPT:
		rows := make([]sharegptRow, len(records))
		for i, r := range records {
			turns := make([]turnRow, len(r.ShareGPT.Conversations))
			for j, t := range r.ShareGPT.Conversations {
				turns[j] = turnRow{From: t.From, Value: t.Value}
				if t.Weight != nil {
					w := int8(*t.Weight)
					turns[j].Weight = &w
				}
			}
			rows[i] = sharegptRow{ID: ids[i], Conversations: turns}
		}
		return writeRows(w, rows, opts)
	case schemas.FormatDPO:
		rows := make([]dpoRow, len(records))
		for i, r := range records {
			rows[i] = dpoRow{ID: ids[i], Prompt: r.DPO.Prompt, Chosen: r.DPO.Chosen, Rejected: r.DPO.Rejected}
		}
		return writeRows(w, rows, opts)
	}
	return fmt.Errorf("encode part: %w: %q", schemas.ErrUnknownFormat, f)
}

func writeRows[T any](w io.Writer, rows []T, opts []parquet.WriterOption) error {
	pw := parquet.NewGenericWriter[T](w, opts...)
	if _, err := pw.Write(rows); err != nil {
		return err
	}
	return pw.Close()
}

// PartMeta is what ReadPartMeta returns: the ids and shard ids a part holds.
type PartMeta struct {
	Format schemas.Format
	IDs    []string
	Shards []string
	Rows   int64
	Bytes  int64
	SHA256 string
}

// ReadPartMeta reads the part file at path's id column and metadata.
func ReadPartMeta(path string) (PartMeta, error) {
	f, size, err := openFile(path)
	if err != nil {
		return PartMeta{}, err
	}
	defer f.Close()
	return decodePartMeta(f, size, path)
}

// LoadPartMeta reads a stored part's id column and metadata (not its text
// columns), and its size and sha256.
func LoadPartMeta(ctx context.Context, store storage.Store, key string) (PartMeta, error) {
	r, info, err := store.Open(ctx, key)
	if err != nil {
		return PartMeta{}, fmt.Errorf("%w: %w", ErrBadPart, err)
	}
	defer r.Close()
	return decodePartMeta(r, info.Size, key)
}

// partReader is a part open for reading: hashed as a stream, read by Parquet at random.
type partReader interface {
	io.Reader
	io.ReaderAt
}

func decodePartMeta(file partReader, size int64, name string) (PartMeta, error) {
	h := sha256.New()
	if _, err := io.Copy(h, file); err != nil {
		return PartMeta{}, fmt.Errorf("%w: %s: %v", ErrBadPart, name, err)
	}
	f, err := parquet.OpenFile(file, size)
	if err != nil {
		return PartMeta{}, fmt.Errorf("%w: %s: %v", ErrBadPart, name, err)
	}
	m := PartMeta{Rows: f.NumRows(), Bytes: size, SHA256: hex.EncodeToString(h.Sum(nil))}
	if v, ok := f.Lookup(metaFormat); ok {
		m.Format = schemas.Format(v)
	}
	if v, ok := f.Lookup(metaShards); ok {
		if err := json.Unmarshal([]byte(v), &m.Shards); err != nil {
			return PartMeta{}, fmt.Errorf("%w: %s: shards metadata: %v", ErrBadPart, name, err)
		}
	}
	m.IDs = make([]string, 0, m.Rows)
	if err := readAll(f, func(r idRow) { m.IDs = append(m.IDs, r.ID) }); err != nil {
		return PartMeta{}, fmt.Errorf("%w: %s: %v", ErrBadPart, name, err)
	}
	return m, nil
}

// ReadPart reads every record of the part file at path, with its ids, in file order.
func ReadPart(path string) (schemas.Format, []schemas.Record, []string, error) {
	f, size, err := openFile(path)
	if err != nil {
		return "", nil, nil, err
	}
	defer f.Close()
	return decodePart(f, size, path)
}

// LoadPart reads every record of a stored part, with its ids, in order.
func LoadPart(ctx context.Context, store storage.Store, key string) (schemas.Format, []schemas.Record, []string, error) {
	r, info, err := store.Open(ctx, key)
	if err != nil {
		return "", nil, nil, fmt.Errorf("%w: %w", ErrBadPart, err)
	}
	defer r.Close()
	return decodePart(r, info.Size, key)
}

func openFile(path string) (*os.File, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %v", ErrBadPart, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("%w: %v", ErrBadPart, err)
	}
	return f, st.Size(), nil
}

func decodePart(file io.ReaderAt, size int64, name string) (schemas.Format, []schemas.Record, []string, error) {
	pf, err := parquet.OpenFile(file, size)
	if err != nil {
		return "", nil, nil, fmt.Errorf("%w: %s: %v", ErrBadPart, name, err)
	}
	v, _ := pf.Lookup(metaFormat)
	format := schemas.Format(v)
	var recs []schemas.Record
	var ids []string
	switch format {
	case schemas.FormatAlpaca:
		err = readAll(pf, func(r alpacaRow) {
			ids = append(ids, r.ID)
			recs = append(recs, schemas.Record{Format: format, Alpaca: schemas.Alpaca{Instruction: r.Instruction, Input: r.Input, Output: r.Output}})
		})
	case schemas.FormatShareGPT:
		err = readAll(pf, func(r sharegptRow) {
			turns := make([]schemas.Turn, len(r.Conversations))
			for i, t := range r.Conversations {
				turns[i] = schemas.Turn{From: t.From, Value: t.Value}
				if t.Weight != nil {
					w := int(*t.Weight)
					turns[i].Weight = &w
				}
			}
			ids = append(ids, r.ID)
			recs = append(recs, schemas.Record{Format: format, ShareGPT: schemas.ShareGPT{Conversations: turns}})
		})
	case schemas.FormatDPO:
		err = readAll(pf, func(r dpoRow) {
			ids = append(ids, r.ID)
			recs = append(recs, schemas.Record{Format: format, DPO: schemas.DPO{Prompt: r.Prompt, Chosen: r.Chosen, Rejected: r.Rejected}})
		})
	default:
		err = fmt.Errorf("unknown format %q in metadata", v)
	}
	if err != nil {
		return "", nil, nil, fmt.Errorf("%w: %s: %v", ErrBadPart, name, err)
	}
	return format, recs, ids, nil
}

func readAll[T any](f *parquet.File, each func(T)) error {
	r := parquet.NewGenericReader[T](f)
	defer r.Close()
	buf := make([]T, 256)
	for {
		n, err := r.Read(buf)
		for _, row := range buf[:n] {
			each(row)
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
