package storage

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/largeforge/largeforge/pipeline"
)

// Kinds of artifact kept only in the object store (lf_artifacts), for the
// gateway's OpenAI Files and Batches APIs.
const (
	// KindFiles: files/<file-id>/content (the bytes) and
	// files/<file-id>/meta.json (the OpenAI file object; written after the
	// content, so a file exists once its meta does).
	KindFiles = "files"
	// KindBatches: batches/<job>/batch.json, what a batch created over
	// HTTP adds to its job record (endpoint, input file, metadata).
	KindBatches = "batches"
)

// File names inside a file's and a batch's prefix.
const (
	FileContentName = "content"
	FileMetaName    = "meta.json"
	BatchFileName   = "batch.json"
)

// File is the key prefix of an uploaded (or derived) file.
func File(id string) string { return KindFiles + "/" + id + "/" }

// FileContent is the key of a file's bytes.
func FileContent(id string) string { return File(id) + FileContentName }

// FileMeta is the key of a file's description.
func FileMeta(id string) string { return File(id) + FileMetaName }

// FileIDOfMeta returns the file id of a FileMeta key.
func FileIDOfMeta(key string) (string, bool) {
	rest, ok := strings.CutPrefix(key, KindFiles+"/")
	if !ok {
		return "", false
	}
	id, ok := strings.CutSuffix(rest, "/"+FileMetaName)
	return id, ok && id != "" && !strings.Contains(id, "/")
}

// Batch is the key of what a batch created over HTTP adds to its job.
func Batch(job string) string { return KindBatches + "/" + job + "/" + BatchFileName }

// DeleteObject removes key from the object store obj; a missing key is
// ErrNotFound.
func DeleteObject(ctx context.Context, obj *pipeline.Objects, key string) error {
	if _, err := elements(key, false); err != nil {
		return err
	}
	err := obj.Delete(ctx, key)
	if errors.Is(err, pipeline.ErrObjectNotFound) {
		return fmt.Errorf("%w: %s: %w", ErrNotFound, key, err)
	}
	return err
}
