package checkpoint

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Info summarises a checkpoint directory without loading its weights (only
// the safetensors headers are read). It backs `largeforge model info`.
type Info struct {
	Dir                 string
	Config              Config
	Parameters          int64    // elements over all stored tensors
	DTypes              []string // distinct stored dtypes, sorted
	WeightBytes         int64    // bytes of tensor data in the weight files
	Files               []string // files of the Hugging Face layout present in Dir, sorted
	Sharded             bool     // weights come from model.safetensors.index.json
	HasTokenizer        bool     // tokenizer.json is present
	HasGenerationConfig bool     // generation_config.json is present
}

// Describe reads dir's config and the headers of its weight files, checks
// every expected tensor's presence and shape, and reports sizes, parameter
// count, dtypes and the files present.
func Describe(dir string) (Info, error) {
	cfg, err := LoadConfig(dir)
	if err != nil {
		return Info{}, err
	}
	info := Info{Dir: dir, Config: cfg}
	files, index, err := weightFiles(dir)
	if err != nil {
		return Info{}, err
	}
	info.Sharded = index != nil
	shapes := map[string][]int{}
	dtypes := map[string]bool{}
	for _, path := range files {
		f, err := os.Open(path)
		if err != nil {
			return Info{}, fmt.Errorf("open safetensors: %w", err)
		}
		st, err := f.Stat()
		if err != nil {
			f.Close()
			return Info{}, fmt.Errorf("stat safetensors %s: %w", path, err)
		}
		h, err := readSTHeader(f, st.Size(), path)
		f.Close()
		if err != nil {
			return Info{}, err
		}
		for _, e := range h.Entries {
			if index != nil && filepath.Join(dir, index[e.Name]) != path {
				continue
			}
			if strings.HasSuffix(e.Name, "rotary_emb.inv_freq") {
				continue
			}
			n, _ := numElements(e.Shape, 1<<62)
			info.Parameters += n
			info.WeightBytes += e.DataOffsets[1] - e.DataOffsets[0]
			dtypes[e.DType] = true
			shapes[e.Name] = e.Shape
		}
	}
	src := files[0]
	if index != nil {
		src = filepath.Join(dir, WeightsIndexFile)
	}
	exp := ExpectedTensors(cfg)
	names := make([]string, 0, len(exp))
	for n := range exp {
		names = append(names, n)
	}
	sort.Strings(names)
	quantized := false
	for _, n := range names {
		if _, ok := shapes[quantModule(n)+".qweight"]; ok {
			quantized = true
		}
	}
	if quantized { // count the weights, not their packed words (quant_files.go)
		info.Parameters = 0
		for _, n := range names {
			c, _ := numElements(exp[n], 1<<62)
			info.Parameters += c
		}
	}
	for _, n := range names {
		shape, ok := shapes[n]
		if _, quantized := shapes[quantModule(n)+".qweight"]; !ok && quantized {
			continue // packed (quant_files.go): its shapes are checked when loaded
		}
		if !ok {
			return Info{}, fmt.Errorf("%s: tensor %q: %w", src, n, ErrMissingTensor)
		}
		if !equalShape(shape, exp[n]) {
			return Info{}, fmt.Errorf("%s: tensor %q: %w: got %v, want %v", src, n, ErrShape, shape, exp[n])
		}
	}
	for d := range dtypes {
		info.DTypes = append(info.DTypes, d)
	}
	sort.Strings(info.DTypes)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return Info{}, fmt.Errorf("read dir %s: %w", dir, err)
	}
	for _, e := range entries {
		if e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		name := e.Name()
		if strings.HasSuffix(name, ".json") || strings.HasSuffix(name, ".safetensors") || name == "training_args.bin" {
			info.Files = append(info.Files, name)
		}
		switch name {
		case TokenizerFile:
			info.HasTokenizer = true
		case GenerationConfigFile:
			info.HasGenerationConfig = true
		}
	}
	sort.Strings(info.Files)
	return info, nil
}
