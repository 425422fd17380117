package dataset

import (
	"context"
	"fmt"

	"github.com/largeforge/largeforge/schemas"
	"github.com/largeforge/largeforge/storage"
)

// Records reads the records of one stored dataset, as a training run takes
// them (model/train's RecordReader).
type Records struct {
	store storage.Store
	name  string
	parts *storage.Parts // nil: storage.DatasetParts of the store
}

// NewRecords returns the reader of dataset name in store.
func NewRecords(store storage.Store, name string) (*Records, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	if store == nil {
		return nil, fmt.Errorf("dataset %s: nil store", name)
	}
	return &Records{store: store, name: name}, nil
}

// NewRecordsOf returns the reader of dataset name's parts as parts lists
// them (storage.IndexedDatasetParts: by their numbers, not the whole
// store's listing), read from store.
func NewRecordsOf(store storage.Store, parts *storage.Parts, name string) (*Records, error) {
	if parts == nil {
		return nil, fmt.Errorf("dataset %s: nil parts", name)
	}
	r, err := NewRecords(store, name)
	if r != nil {
		r.parts = parts
	}
	return r, err
}

// ReadRecords returns every record of the dataset's parts, part after part
// in number order; a dataset without parts has none.
func (r *Records) ReadRecords(ctx context.Context) ([]schemas.Record, error) {
	parts := r.parts
	if parts == nil {
		var err error
		if parts, err = storage.DatasetParts(r.store, r.name); err != nil {
			return nil, err
		}
	}
	list, err := parts.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("dataset %s: %w", r.name, err)
	}
	var out []schemas.Record
	for _, p := range list {
		_, recs, _, err := LoadPart(ctx, r.store, p.Key)
		if err != nil {
			return nil, fmt.Errorf("dataset %s: %w", r.name, err)
		}
		out = append(out, recs...)
	}
	return out, nil
}

// String names the dataset, for messages about what was read.
func (r *Records) String() string { return "dataset " + r.name }
