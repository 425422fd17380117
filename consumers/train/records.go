package train

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/largeforge/largeforge/dataset"
	"github.com/largeforge/largeforge/model/train"
	"github.com/largeforge/largeforge/pipeline"
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
// store (the bus's lf_artifacts: storage.OpenObjects), on any machine, as
// parts lists its parts (nil: storage.DatasetParts).
func RecordsFrom(rc train.RunConfig, store storage.Store, parts *storage.Parts) (train.RecordReader, error) {
	if rc.Dataset == "" || rc.DataDir != "" {
		return Records(rc)
	}
	if parts != nil {
		return dataset.NewRecordsOf(store, parts, rc.Dataset)
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

// indexOpenWait bounds the opening of lf_dedupe by DatasetParts: a
// connection whose role may not read it gets no answer, only a
// permissions violation, and waits out the deadline.
const indexOpenWait = 10 * time.Second

// DatasetParts is the artifacts store of bus (lf_artifacts) and the parts
// of dataset name there when it holds some, else nils. The parts are
// listed by their numbers in the dataset's part index (lf_dedupe); where
// lf_dedupe does not open within indexOpenWait (`largeforge train` run as
// a role that may not read it; a train worker checks at its start that it
// may), a warning says so and they are found by the store's listing of
// every object.
func DatasetParts(ctx context.Context, bus *pipeline.Bus, name string, log zerolog.Logger) (*storage.Objects, *storage.Parts, error) {
	objects, err := storage.OpenObjects(ctx, bus, "")
	if err != nil {
		return nil, nil, err
	}
	var parts *storage.Parts
	kctx, cancel := context.WithTimeout(ctx, indexOpenWait)
	index, kerr := bus.KV(kctx, pipeline.BucketDedupe)
	cancel()
	if kerr == nil {
		parts, err = storage.IndexedDatasetParts(objects, index, name)
	} else {
		log.Warn().Err(kerr).Str("dataset", name).Msgf("%s not readable: the dataset's parts are found by listing all of %s", pipeline.BucketDedupe, pipeline.BucketArtifacts)
		parts, err = storage.DatasetParts(objects, name)
	}
	if err != nil {
		return nil, nil, err
	}
	list, err := parts.List(ctx)
	if err != nil || len(list) == 0 {
		return nil, nil, err
	}
	return objects, parts, nil
}
