package ingest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/largeforge/largeforge/dataset"
	"github.com/largeforge/largeforge/dataset/read"
	"github.com/largeforge/largeforge/schemas"
)

// Floor does what a run does without the bus: read source, decode and validate
// every record, and write Parquet parts of partRows records into dir. It is the
// baseline the ingestion benchmark compares the bus path with.
func Floor(ctx context.Context, source, dir string, partRows int) (int64, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, err
	}
	rr, err := read.Open(source, nil, DefaultConfig().MaxLineBytes, "")
	if err != nil {
		return 0, err
	}
	defer rr.Close()
	var recs []schemas.Record
	var ids []string
	var format schemas.Format
	parts, rows := 0, int64(0)
	write := func() error {
		if len(recs) == 0 {
			return nil
		}
		if _, err := dataset.WritePart(filepath.Join(dir, dataset.PartName(parts)), format, recs, ids, nil); err != nil {
			return err
		}
		parts++
		recs, ids = recs[:0], ids[:0]
		return nil
	}
	_, err = scan(ctx, rr, scanOptions{source: source, maxRecord: DefaultConfig().ShardBytes}, func(a read.Accepted) error {
		format = a.Record.Format
		recs = append(recs, a.Record)
		ids = append(ids, a.ID)
		rows++
		if len(recs) >= partRows {
			return write()
		}
		return nil
	}, func(r read.Reject) error { return nil })
	if err != nil {
		return rows, fmt.Errorf("floor: %w", err)
	}
	return rows, write()
}
