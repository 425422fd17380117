package dataset

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/parquet-go/parquet-go"
	pqzstd "github.com/parquet-go/parquet-go/compress/zstd"

	"github.com/largeforge/largeforge/internal/atomicfile"
	"github.com/largeforge/largeforge/schemas"
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
	From  string `parquet:"from"`
	Value string `parquet:"value"`
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

// PartName is the file name of part number n.
func PartName(n int) string { return fmt.Sprintf("part-%05d.parquet", n) }

// PartInfo describes one written part, as the manifest lists it.
type PartInfo struct {
	File   string   `json:"file"`
	Rows   int64    `json:"rows"`
	Bytes  int64    `json:"bytes"`
	SHA256 string   `json:"sha256"`
	Shards []string `json:"-"`
}

// WritePart writes records as a zstd Parquet file at path, through a temporary
// file that is synced and renamed, so that a reader never sees a partial part.
// shardIDs are the shard message ids the part holds, kept in its metadata so
// that a redelivered shard is recognised after a crash.
func WritePart(path string, f schemas.Format, records []schemas.Record, ids []string, shardIDs []string) (PartInfo, error) {
	if len(records) != len(ids) {
		return PartInfo{}, fmt.Errorf("write part %s: %d records but %d ids", path, len(records), len(ids))
	}
	shardJSON, err := json.Marshal(shardIDs)
	if err != nil {
		return PartInfo{}, err
	}
	h := sha256.New()
	var size int64
	err = atomicfile.Write(path, func(w io.Writer) error {
		cw := &countWriter{w: io.MultiWriter(w, h)}
		opts := []parquet.WriterOption{
			parquet.Compression(partCodec),
			parquet.KeyValueMetadata(metaFormat, string(f)),
			parquet.KeyValueMetadata(metaShards, string(shardJSON)),
		}
		defer func() { size = cw.n }()
		switch f {
		case schemas.FormatAlpaca:
			rows := make([]alpacaRow, len(records))
			for i, r := range records {
				rows[i] = alpacaRow{ID: ids[i], Instruction: r.Alpaca.Instruction, Input: r.Alpaca.Input, Output: r.Alpaca.Output}
			}
			return writeRows(cw, rows, opts)
		case schemas.FormatShareGPT:
			rows := make([]sharegptRow, len(records))
			for i, r := range records {
				turns := make([]turnRow, len(r.ShareGPT.Conversations))
				for j, t := range r.ShareGPT.Conversations {
					turns[j] = turnRow{From: t.From, Value: t.Value}
				}
				rows[i] = sharegptRow{ID: ids[i], Conversations: turns}
			}
			return writeRows(cw, rows, opts)
		case schemas.FormatDPO:
			rows := make([]dpoRow, len(records))
			for i, r := range records {
				rows[i] = dpoRow{ID: ids[i], Prompt: r.DPO.Prompt, Chosen: r.DPO.Chosen, Rejected: r.DPO.Rejected}
			}
			return writeRows(cw, rows, opts)
		}
		return fmt.Errorf("%w: %q", schemas.ErrUnknownFormat, f)
	})
	if err != nil {
		return PartInfo{}, fmt.Errorf("write part: %w", err)
	}
	return PartInfo{File: filepath.Base(path), Rows: int64(len(records)), Bytes: size, SHA256: hex.EncodeToString(h.Sum(nil)), Shards: shardIDs}, nil
}
func writeRows[T any](w io.Writer, rows []T, opts []parquet.WriterOption) error {
	pw := parquet.NewGenericWriter[T](w, opts...)
	if _, err := pw.Write(rows); err != nil {
		return err
	}
	return pw.Close()
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
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

// ReadPartMeta reads a part's id column and metadata (not its text columns).
func ReadPartMeta(path string) (PartMeta, error) {
	file, err := os.Open(path)
	if err != nil {
		return PartMeta{}, fmt.Errorf("%w: %v", ErrBadPart, err)
	}
	defer file.Close()
	h := sha256.New()
	size, err := io.Copy(h, file)
	if err != nil {
		return PartMeta{}, fmt.Errorf("%w: %s: %v", ErrBadPart, path, err)
	}
	f, err := parquet.OpenFile(file, size)
	if err != nil {
		return PartMeta{}, fmt.Errorf("%w: %s: %v", ErrBadPart, path, err)
	}
	m := PartMeta{Rows: f.NumRows(), Bytes: size, SHA256: hex.EncodeToString(h.Sum(nil))}
	if v, ok := f.Lookup(metaFormat); ok {
		m.Format = schemas.Format(v)
	}
	if v, ok := f.Lookup(metaShards); ok {
		if err := json.Unmarshal([]byte(v), &m.Shards); err != nil {
			return PartMeta{}, fmt.Errorf("%w: %s: shards metadata: %v", ErrBadPart, path, err)
		}
	}
	r := parquet.NewGenericReader[idRow](f)
	defer r.Close()
	m.IDs = make([]string, 0, m.Rows)
	buf := make([]idRow, 1024)
	for {
		n, err := r.Read(buf)
		for _, row := range buf[:n] {
			m.IDs = append(m.IDs, row.ID)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return PartMeta{}, fmt.Errorf("%w: %s: %v", ErrBadPart, path, err)
		}
	}
	return m, nil
}

// ReadPart reads every record of a part, with its ids, in file order.
func ReadPart(path string) (schemas.Format, []schemas.Record, []string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", nil, nil, fmt.Errorf("%w: %v", ErrBadPart, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", nil, nil, fmt.Errorf("%w: %v", ErrBadPart, err)
	}
	pf, err := parquet.OpenFile(f, st.Size())
	if err != nil {
		return "", nil, nil, fmt.Errorf("%w: %s: %v", ErrBadPart, path, err)
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
		return "", nil, nil, fmt.Errorf("%w: %s: %v", ErrBadPart, path, err)
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
