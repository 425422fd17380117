package checkpoint

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Checkpoint is a loaded model directory: its config, its generation
// defaults and every weight as float32.
type Checkpoint struct {
	Config     Config
	Generation GenerationConfig
	Tensors    map[string]*Tensor
}

// ExpectedTensors lists every tensor a model of config c needs, with its
// shape, under Hugging Face names (Layout as a map).
func ExpectedTensors(c Config) map[string][]int {
	m := map[string][]int{}
	for _, w := range Layout(c) {
		m[w.Name] = w.Shape
	}
	return m
}

// CheckTensors verifies that every tensor of Layout(c) is present with its
// shape and that each tensor's data matches its shape (BindTensors). file
// names the source in errors.
func CheckTensors(c Config, tensors map[string]*Tensor, file string) error {
	if _, err := BindTensors(c, tensors); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	return nil
}

func equalShape(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// shardIndex is model.safetensors.index.json.
type shardIndex struct {
	Metadata  map[string]any    `json:"metadata"`
	WeightMap map[string]string `json:"weight_map"`
}

// weightFiles returns the safetensors files of dir: model.safetensors, or
// the shards named by model.safetensors.index.json, with the tensors the
// index places in each (nil for a single file).
func weightFiles(dir string) (files []string, index map[string]string, err error) {
	single := filepath.Join(dir, WeightsFile)
	if _, err := os.Stat(single); err == nil {
		return []string{single}, nil, nil
	}
	idxPath := filepath.Join(dir, WeightsIndexFile)
	data, err := os.ReadFile(idxPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, fmt.Errorf("%s: %w: neither %s nor %s", dir, ErrNoWeights, WeightsFile, WeightsIndexFile)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", idxPath, err)
	}
	var idx shardIndex
	if err := json.Unmarshal(data, &idx); err != nil {
		return nil, nil, fmt.Errorf("%s: %w: %v", idxPath, ErrBadHeader, err)
	}
	if len(idx.WeightMap) == 0 {
		return nil, nil, fmt.Errorf("%s: %w: empty weight_map", idxPath, ErrBadHeader)
	}
	seen := map[string]bool{}
	for tensor, shard := range idx.WeightMap {
		if !filepath.IsLocal(shard) || strings.ContainsAny(shard, `/\`) {
			return nil, nil, fmt.Errorf("%s: tensor %q: %w: shard %q is not a file name in the directory", idxPath, tensor, ErrBadHeader, shard)
		}
		if !seen[shard] {
			seen[shard] = true
			files = append(files, filepath.Join(dir, shard))
		}
	}
	sort.Strings(files)
	return files, idx.WeightMap, nil
}

// Load reads a Hugging Face checkpoint directory: config.json,
// generation_config.json (optional) and model.safetensors or the shards of
// model.safetensors.index.json. It checks that every tensor the config
// needs is present with the right shape.
func Load(dir string) (*Checkpoint, error) {
	if q, err := IsQuantized(dir); err != nil || q { // §4.3, quant_files.go
		if err != nil {
			return nil, err
		}
		ck, _, err := LoadQuantized(dir)
		return ck, err
	}
	cfg, err := LoadConfig(dir)
	if err != nil {
		return nil, err
	}
	gen, err := LoadGenerationConfig(dir)
	if err != nil {
		return nil, err
	}
	tensors, src, err := loadWeights(dir)
	if err != nil {
		return nil, err
	}
	if err := CheckTensors(cfg, tensors, src); err != nil {
		return nil, err
	}
	return &Checkpoint{Config: cfg, Generation: gen, Tensors: tensors}, nil
}

// loadWeights reads all weight files of dir; src names them for errors.
func loadWeights(dir string) (map[string]*Tensor, string, error) {
	files, index, err := weightFiles(dir)
	if err != nil {
		return nil, "", err
	}
	tensors := map[string]*Tensor{}
	for _, f := range files {
		ts, _, err := ReadSafetensors(f)
		if err != nil {
			return nil, "", err
		}
		for name, t := range ts {
			if index != nil && filepath.Join(dir, index[name]) != f {
				continue // not the shard the index assigns it to
			}
			if strings.HasSuffix(name, "rotary_emb.inv_freq") {
				continue // buffer saved by old transformers versions, recomputed from the config
			}
			tensors[name] = t
		}
	}
	src := files[0]
	if index != nil {
		src = filepath.Join(dir, WeightsIndexFile)
		for name, shard := range index {
			if _, ok := tensors[name]; !ok && !strings.HasSuffix(name, "rotary_emb.inv_freq") {
				return nil, "", fmt.Errorf("%s: tensor %q: %w", filepath.Join(dir, shard), name, ErrMissingTensor)
			}
		}
	}
	return tensors, src, nil
}

// Save writes ck as a Hugging Face checkpoint into dir (created if absent):
// config.json, generation_config.json and model.safetensors (F32), each
// atomically. Tokenizer files are left as they are. The tensors are checked
// against the config first.
func Save(dir string, ck *Checkpoint) error {
	if ck == nil {
		return fmt.Errorf("save %s: %w: nil checkpoint", dir, ErrInvalidConfig)
	}
	if err := ck.Config.Validate(); err != nil {
		return fmt.Errorf("save %s: %w", dir, err)
	}
	if err := CheckTensors(ck.Config, ck.Tensors, dir); err != nil {
		return fmt.Errorf("save: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("save: %w", err)
	}
	cfg := ck.Config
	cfg.TorchDtype = "float32"
	if err := WriteSafetensors(filepath.Join(dir, WeightsFile), ck.Tensors, map[string]string{"format": "pt"}); err != nil {
		return err
	}
	if err := os.Remove(filepath.Join(dir, WeightsIndexFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("save: remove stale shard index: %w", err)
	}
	if err := writeJSONAtomic(filepath.Join(dir, GenerationConfigFile), ck.Generation); err != nil {
		return err
	}
	return writeJSONAtomic(filepath.Join(dir, ConfigFile), cfg)
}

// TokenizerFiles are the tokenizer files of the Hugging Face layout.
var TokenizerFiles = []string{TokenizerFile, TokenizerConfigFile, SpecialTokensMapFile}

// CopyTokenizer copies the tokenizer files present in src into dst (each
// atomically), so that a checkpoint saved elsewhere (a fine-tune, an
// import) keeps its tokenizer. It returns the names copied; a src without
// tokenizer.json is an error.
func CopyTokenizer(src, dst string) ([]string, error) {
	if _, err := os.Stat(filepath.Join(src, TokenizerFile)); err != nil {
		return nil, fmt.Errorf("copy tokenizer: %w", err)
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return nil, fmt.Errorf("copy tokenizer: %w", err)
	}
	var copied []string
	for _, name := range TokenizerFiles {
		data, err := os.ReadFile(filepath.Join(src, name))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return copied, fmt.Errorf("copy tokenizer: %w", err)
		}
		if err := writeAtomic(filepath.Join(dst, name), func(w io.Writer) error {
			_, err := w.Write(data)
			return err
		}); err != nil {
			return copied, err
		}
		copied = append(copied, name)
	}
	return copied, nil
}
