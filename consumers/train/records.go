package train

import (
	"context"
	"fmt"
	"strings"

	"github.com/largeforge/largeforge/dataset"
	"github.com/largeforge/largeforge/model/train"
	"github.com/largeforge/largeforge/schemas"
	"github.com/largeforge/largeforge/storage"
)

// Records is the reader of rc's training records that train.Run is handed
// (train.WithRecords): the parts of its dataset in the store of its
// data_dir, or its data_files (Parquet parts and JSONL files).
func Records(rc train.RunConfig) (train.RecordReader, error) {
	if rc.Dataset == "" {
		return dataFiles{paths: rc.DataFiles, format: rc.Format}, nil
	}
	store, err := storage.NewLocal(storage.DirsUnder(rc.DataDir))
	if err != nil {
		return nil, fmt.Errorf("%w: data dir %q: %w", ErrInvalidOption, rc.DataDir, err)
	}
	return dataset.NewRecords(store, rc.Dataset)
}

// RecordsFrom is Records where a dataset without a data_dir is read from
// store (the bus's lf_artifacts: storage.OpenObjects), on any machine.
func RecordsFrom(rc train.RunConfig, store storage.Store) (train.RecordReader, error) {
	if rc.Dataset == "" || rc.DataDir != "" {
		return Records(rc)
	}
	return dataset.NewRecords(store, rc.Dataset)
}

// dataFiles reads Parquet parts (*.parquet) and JSONL files, in order.
type dataFiles struct {
	paths  []string
	format string
}

func (d dataFiles) ReadRecords(ctx context.Context) ([]schemas.Record, error) {
	var out []schemas.Record
	for _, p := range d.paths {
		var recs []schemas.Record
		var err error
		if strings.HasSuffix(p, ".parquet") {
			_, recs, _, err = dataset.ReadPart(p)
		} else {
			recs, err = train.JSONLFiles{Paths: []string{p}, Format: d.format}.ReadRecords(ctx)
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", p, err)
		}
		out = append(out, recs...)
	}
	return out, nil
}

func (d dataFiles) String() string { return strings.Join(d.paths, ", ") }
