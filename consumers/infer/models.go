package infer

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/largeforge/largeforge/pipeline"
)

// ErrModelNotFound: lf_models holds no object of that model.
var ErrModelNotFound = errors.New("model not in the object store")

// Models in lf_models are stored as one object per checkpoint file, named
// <model>/<file> (config.json, model.safetensors, tokenizer.json, ...).

// PutModel uploads the regular files of a checkpoint directory into lf_models
// under name, and returns how many it stored.
func PutModel(ctx context.Context, bus *pipeline.Bus, name, dir string) (int, error) {
	if err := pipeline.ValidToken(name); err != nil {
		return 0, fmt.Errorf("%w: model name: %w", ErrInvalidOption, err)
	}
	store, err := bus.Objects(ctx, pipeline.BucketModels)
	if err != nil {
		return 0, err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("model %s: %w", name, err)
	}
	n := 0
	for _, e := range entries {
		if !e.Type().IsRegular() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		f, err := os.Open(filepath.Join(dir, e.Name()))
		if err != nil {
			return n, err
		}
		_, err = store.Put(ctx, name+"/"+e.Name(), f)
		f.Close()
		if err != nil {
			return n, fmt.Errorf("model %s: put %s: %w", name, e.Name(), err)
		}
		n++
	}
	return n, nil
}

// FetchModel makes cacheDir/<name> hold the model's files from lf_models and
// returns that directory. Files whose SHA-256 already matches are kept; the
// others are downloaded to a temporary name and renamed into place.
func FetchModel(ctx context.Context, bus *pipeline.Bus, name, cacheDir string) (string, error) {
	if err := pipeline.ValidToken(name); err != nil {
		return "", fmt.Errorf("%w: model name: %w", ErrInvalidOption, err)
	}
	store, err := bus.Objects(ctx, pipeline.BucketModels)
	if err != nil {
		return "", err
	}
	infos, err := store.List(ctx)
	if err != nil {
		return "", fmt.Errorf("model %s: list %s: %w", name, pipeline.BucketModels, err)
	}
	dir := filepath.Join(cacheDir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	found := 0
	for _, info := range infos {
		file, ok := strings.CutPrefix(info.Name, name+"/")
		if !ok || info.Deleted || file == "" || strings.ContainsAny(file, `/\`) || file == "." || file == ".." {
			continue
		}
		found++
		path := filepath.Join(dir, file)
		if digestOf(path) == info.Digest {
			continue
		}
		tmp := path + ".tmp"
		if err := store.GetFile(ctx, info.Name, tmp); err != nil {
			os.Remove(tmp)
			return "", fmt.Errorf("model %s: get %s: %w", name, file, err)
		}
		if err := os.Rename(tmp, path); err != nil {
			return "", err
		}
	}
	if found == 0 {
		return "", fmt.Errorf("%w: %s (put it there with infer.PutModel)", ErrModelNotFound, name)
	}
	return dir, nil
}

// digestOf is a file's digest in the object store's form ("SHA-256=" and
// base64url), or "" when it cannot be read.
func digestOf(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return ""
	}
	return "SHA-256=" + base64.URLEncoding.EncodeToString(h.Sum(nil))
}
