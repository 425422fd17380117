package checkpoint

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/largeforge/largeforge/internal/testenv"
)

// smallConfig is a two-layer grouped-query Llama that tests can afford.
func smallConfig() Config {
	return Config{
		Architecture: ArchLlama, ModelType: "llama", VocabSize: 32, HiddenSize: 16,
		IntermediateSize: 24, NumLayers: 2, NumHeads: 4, NumKVHeads: 2, HeadDim: 4,
		MaxPositionEmbeddings: 128, RMSNormEps: 1e-5, RopeTheta: 10000,
		BOSTokenID: 1, EOSTokenIDs: []int{2}, TorchDtype: "float32",
	}
}

func smallCheckpoint(t testing.TB, c Config) *Checkpoint {
	t.Helper()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	ts, err := InitTensors(c, 7)
	if err != nil {
		t.Fatal(err)
	}
	return &Checkpoint{Config: c, Generation: GenerationConfig{BOSTokenID: 1, EOSTokenIDs: []int{2}, Temperature: 0.8, TopK: 40}, Tensors: ts}
}

func TestSaveLoadRoundTrip(t *testing.T) {
	qwen := smallConfig()
	qwen.Architecture, qwen.ModelType, qwen.AttentionBias, qwen.TieWordEmbeddings = ArchQwen2, "qwen2", true, true
	biased := smallConfig()
	biased.AttentionBias = true
	scaled := smallConfig()
	scaled.RopeScaling = &RopeScaling{Type: "llama3", Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPositionEmbeddings: 64}
	scaled.EOSTokenIDs = []int{2, 3}
	tests := []struct {
		name string
		cfg  Config
	}{
		{name: "llama", cfg: smallConfig()},
		{name: "llama with attention bias", cfg: biased},
		{name: "qwen2 tied", cfg: qwen},
		{name: "llama3 rope scaling, two eos", cfg: scaled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "ck")
			in := smallCheckpoint(t, tt.cfg)
			if err := Save(dir, in); err != nil {
				t.Fatalf("Save: %v", err)
			}
			out, err := Load(dir)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if !reflect.DeepEqual(out.Config, in.Config) {
				t.Errorf("config:\n got %+v\nwant %+v", out.Config, in.Config)
			}
			if !reflect.DeepEqual(out.Generation, in.Generation) {
				t.Errorf("generation: got %+v, want %+v", out.Generation, in.Generation)
			}
			if !reflect.DeepEqual(out.Tensors, in.Tensors) {
				t.Errorf("tensors differ after round trip")
			}
		})
	}
}

func TestExpectedTensorsBiases(t *testing.T) {
	qwen := smallConfig()
	qwen.Architecture = ArchQwen2
	llamaBias := smallConfig()
	llamaBias.AttentionBias = true
	tied := smallConfig()
	tied.TieWordEmbeddings = true
	tests := []struct {
		name    string
		cfg     Config
		present []string
		absent  []string
		count   int
	}{
		{name: "llama", cfg: smallConfig(), present: []string{"lm_head.weight", "model.layers.1.mlp.down_proj.weight"}, absent: []string{"model.layers.0.self_attn.q_proj.bias"}, count: 3 + 2*9},
		{name: "qwen2", cfg: qwen, present: []string{"model.layers.0.self_attn.q_proj.bias", "model.layers.0.self_attn.v_proj.bias"}, absent: []string{"model.layers.0.self_attn.o_proj.bias"}, count: 3 + 2*12},
		{name: "llama bias", cfg: llamaBias, present: []string{"model.layers.0.self_attn.o_proj.bias"}, count: 3 + 2*13},
		{name: "tied", cfg: tied, absent: []string{"lm_head.weight"}, count: 2 + 2*9},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ExpectedTensors(tt.cfg)
			for _, n := range tt.present {
				if _, ok := got[n]; !ok {
					t.Errorf("%s missing", n)
				}
			}
			for _, n := range tt.absent {
				if _, ok := got[n]; ok {
					t.Errorf("%s present", n)
				}
			}
			if len(got) != tt.count {
				t.Errorf("%d tensors, want %d", len(got), tt.count)
			}
		})
	}
	got := ExpectedTensors(smallConfig())
	if s := got["model.layers.0.self_attn.k_proj.weight"]; !reflect.DeepEqual(s, []int{8, 16}) {
		t.Errorf("k_proj shape %v, want [8 16]", s)
	}
}

// writeSharded saves ck, then splits its weights into two shards with an index.
func writeSharded(t *testing.T, dir string, ck *Checkpoint) map[string]string {
	t.Helper()
	if err := Save(dir, ck); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, WeightsFile)); err != nil {
		t.Fatal(err)
	}
	names := make([]string, 0, len(ck.Tensors))
	for n := range ck.Tensors {
		names = append(names, n)
	}
	sort.Strings(names)
	shards := [2]map[string]*Tensor{{}, {}}
	weightMap := map[string]string{}
	for i, n := range names {
		k := i % 2
		shards[k][n] = ck.Tensors[n]
		weightMap[n] = []string{"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}[k]
	}
	for k, s := range shards {
		name := []string{"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}[k]
		if err := WriteSafetensors(filepath.Join(dir, name), s, map[string]string{"format": "pt"}); err != nil {
			t.Fatal(err)
		}
	}
	writeIndex(t, dir, weightMap)
	return weightMap
}

func writeIndex(t *testing.T, dir string, weightMap map[string]string) {
	t.Helper()
	b, err := json.Marshal(map[string]any{"metadata": map[string]any{"total_size": 0}, "weight_map": weightMap})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, WeightsIndexFile, b)
}

func TestLoadSharded(t *testing.T) {
	dir := t.TempDir()
	in := smallCheckpoint(t, smallConfig())
	writeSharded(t, dir, in)
	out, err := Load(dir)
	if err != nil {
		t.Fatalf("Load sharded: %v", err)
	}
	if !reflect.DeepEqual(out.Tensors, in.Tensors) {
		t.Errorf("sharded tensors differ")
	}
	info, err := Describe(dir)
	if err != nil {
		t.Fatalf("Describe: %v", err)
	}
	if !info.Sharded || info.Parameters != paramCount(in.Tensors) {
		t.Errorf("Describe: sharded %v params %d, want true %d", info.Sharded, info.Parameters, paramCount(in.Tensors))
	}
}

func paramCount(ts map[string]*Tensor) int64 {
	var n int64
	for _, t := range ts {
		n += int64(len(t.Data))
	}
	return n
}

func TestLoadErrors(t *testing.T) {
	cfg := smallConfig()
	tests := []struct {
		name    string
		setup   func(t *testing.T, dir string)
		wantErr error
		naming  []string
	}{
		{
			name: "missing tensor",
			setup: func(t *testing.T, dir string) {
				ck := smallCheckpoint(t, cfg)
				if err := Save(dir, ck); err != nil {
					t.Fatal(err)
				}
				delete(ck.Tensors, "model.layers.1.mlp.up_proj.weight")
				if err := WriteSafetensors(filepath.Join(dir, WeightsFile), ck.Tensors, nil); err != nil {
					t.Fatal(err)
				}
			},
			wantErr: ErrMissingTensor, naming: []string{WeightsFile, "model.layers.1.mlp.up_proj.weight"},
		},
		{
			name: "wrong shape",
			setup: func(t *testing.T, dir string) {
				ck := smallCheckpoint(t, cfg)
				if err := Save(dir, ck); err != nil {
					t.Fatal(err)
				}
				ck.Tensors["model.norm.weight"] = &Tensor{Shape: []int{15}, Data: make([]float32, 15)}
				if err := WriteSafetensors(filepath.Join(dir, WeightsFile), ck.Tensors, nil); err != nil {
					t.Fatal(err)
				}
			},
			wantErr: ErrShape, naming: []string{WeightsFile, "model.norm.weight"},
		},
		{
			name: "truncated weights",
			setup: func(t *testing.T, dir string) {
				if err := Save(dir, smallCheckpoint(t, cfg)); err != nil {
					t.Fatal(err)
				}
				p := filepath.Join(dir, WeightsFile)
				fi, err := os.Stat(p)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.Truncate(p, fi.Size()-100); err != nil {
					t.Fatal(err)
				}
			},
			wantErr: ErrTruncated, naming: []string{WeightsFile, "model.layers.1.self_attn.v_proj.weight"},
		},
		{
			name: "bf16 dtype unsupported elsewhere: I8",
			setup: func(t *testing.T, dir string) {
				if err := Save(dir, smallCheckpoint(t, cfg)); err != nil {
					t.Fatal(err)
				}
				writeFile(t, dir, WeightsFile, buildSafetensors(t, []rawTensor{{name: "model.norm.weight", dtype: "I8", shape: []int{16}, data: make([]byte, 16)}}, nil))
			},
			wantErr: ErrDType, naming: []string{WeightsFile, "model.norm.weight"},
		},
		{
			name: "no weights",
			setup: func(t *testing.T, dir string) {
				if err := Save(dir, smallCheckpoint(t, cfg)); err != nil {
					t.Fatal(err)
				}
				if err := os.Remove(filepath.Join(dir, WeightsFile)); err != nil {
					t.Fatal(err)
				}
			},
			wantErr: ErrNoWeights,
		},
		{
			name: "shard listed in index is absent",
			setup: func(t *testing.T, dir string) {
				writeSharded(t, dir, smallCheckpoint(t, cfg))
				if err := os.Remove(filepath.Join(dir, "model-00002-of-00002.safetensors")); err != nil {
					t.Fatal(err)
				}
			},
			wantErr: os.ErrNotExist, naming: []string{"model-00002-of-00002.safetensors"},
		},
		{
			name: "index names a tensor its shard lacks",
			setup: func(t *testing.T, dir string) {
				wm := writeSharded(t, dir, smallCheckpoint(t, cfg))
				wm["model.extra.weight"] = "model-00001-of-00002.safetensors"
				writeIndex(t, dir, wm)
			},
			wantErr: ErrMissingTensor, naming: []string{"model-00001-of-00002.safetensors", "model.extra.weight"},
		},
		{
			name: "index escapes the directory",
			setup: func(t *testing.T, dir string) {
				wm := writeSharded(t, dir, smallCheckpoint(t, cfg))
				wm["model.norm.weight"] = "../evil.safetensors"
				writeIndex(t, dir, wm)
			},
			wantErr: ErrBadHeader, naming: []string{"model.norm.weight"},
		},
		{
			name: "unknown architecture",
			setup: func(t *testing.T, dir string) {
				if err := Save(dir, smallCheckpoint(t, cfg)); err != nil {
					t.Fatal(err)
				}
				writeFile(t, dir, ConfigFile, []byte(`{"architectures":["FalconForCausalLM"]}`))
			},
			wantErr: ErrUnknownArchitecture, naming: []string{ConfigFile, "FalconForCausalLM"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			tt.setup(t, dir)
			_, err := Load(dir)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			for _, s := range tt.naming {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not name %q", err, s)
				}
			}
		})
	}
}

func TestSaveRejectsBadCheckpoint(t *testing.T) {
	ck := smallCheckpoint(t, smallConfig())
	delete(ck.Tensors, "model.norm.weight")
	dir := filepath.Join(t.TempDir(), "out")
	if err := Save(dir, ck); !errors.Is(err, ErrMissingTensor) {
		t.Fatalf("Save without model.norm.weight: err = %v, want ErrMissingTensor", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Save created %s before failing", dir)
	}
	bad := smallCheckpoint(t, smallConfig())
	bad.Config.NumKVHeads = 3
	if err := Save(dir, bad); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("Save with invalid config: err = %v, want ErrInvalidConfig", err)
	}
}

func TestLoadStories260K(t *testing.T) {
	dir := filepath.Dir(testenv.SharedFile(t, "models/stories260K/model.safetensors"))
	ck, err := Load(dir)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := Config{
		Architecture: ArchLlama, ModelType: "llama", VocabSize: 512, HiddenSize: 64,
		IntermediateSize: 172, NumLayers: 5, NumHeads: 8, NumKVHeads: 4, HeadDim: 8,
		MaxPositionEmbeddings: 2048, RMSNormEps: 1e-5, RopeTheta: 10000,
		BOSTokenID: 1, EOSTokenIDs: []int{2}, TorchDtype: "float32",
	}
	if !reflect.DeepEqual(ck.Config, want) {
		t.Errorf("config:\n got %+v\nwant %+v", ck.Config, want)
	}
	if g := ck.Generation; g.BOSTokenID != 1 || !reflect.DeepEqual(g.EOSTokenIDs, []int{2}) || g.DoSample || g.MaxLength != 2048 {
		t.Errorf("generation config %+v", g)
	}
	if len(ck.Tensors) != 48 {
		t.Errorf("%d tensors, want 48", len(ck.Tensors))
	}
	if n := paramCount(ck.Tensors); n != 292_800 {
		t.Errorf("%d parameters, want 292800", n)
	}
	info, err := Describe(dir)
	if err != nil {
		t.Fatalf("Describe: %v", err)
	}
	if info.Parameters != 292_800 || !reflect.DeepEqual(info.DTypes, []string{"F32"}) || !info.HasTokenizer || info.Sharded || info.WeightBytes != 4*292_800 {
		t.Errorf("Describe = %+v", info)
	}
	for _, f := range []string{ConfigFile, GenerationConfigFile, WeightsFile, TokenizerFile, TokenizerConfigFile, SpecialTokensMapFile} {
		if !contains(info.Files, f) {
			t.Errorf("Describe.Files %v lacks %s", info.Files, f)
		}
	}

	// Save and reload: the written checkpoint is the same model.
	out := t.TempDir()
	if err := Save(out, ck); err != nil {
		t.Fatal(err)
	}
	again, err := Load(out)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(again.Config, ck.Config) || !reflect.DeepEqual(again.Tensors, ck.Tensors) {
		t.Errorf("stories260K changed through Save/Load")
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestCopyTokenizer(t *testing.T) {
	src, dst := t.TempDir(), filepath.Join(t.TempDir(), "ft")
	if err := Init("tiny", 1, src); err != nil {
		t.Fatal(err)
	}
	got, err := CopyTokenizer(src, dst)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, TokenizerFiles) {
		t.Errorf("copied %v, want %v", got, TokenizerFiles)
	}
	for _, f := range TokenizerFiles {
		a, _ := os.ReadFile(filepath.Join(src, f))
		b, err := os.ReadFile(filepath.Join(dst, f))
		if err != nil || string(a) != string(b) {
			t.Errorf("%s not copied intact: %v", f, err)
		}
	}
	if _, err := CopyTokenizer(t.TempDir(), dst); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("copy from a directory without tokenizer.json: err = %v, want os.ErrNotExist", err)
	}
}
