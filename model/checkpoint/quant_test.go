package checkpoint

import (
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// quantizedTiny writes the tiny preset and its quantization at bits/group
// size, returning the float checkpoint and the quantized directory.
func quantizedTiny(t *testing.T, bits, group int) (*Checkpoint, string, QuantConfig) {
	t.Helper()
	src := t.TempDir()
	if err := Init("tiny", 3, src); err != nil {
		t.Fatal(err)
	}
	ck, err := Load(src)
	if err != nil {
		t.Fatal(err)
	}
	qck, qc, err := QuantizeCheckpoint(ck, bits, group)
	if err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	if err := SaveQuantized(dst, qck, qc); err != nil {
		t.Fatal(err)
	}
	return ck, dst, qc
}

func TestQuantizeRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		bits, group int
		maxErr      float64 // of a weight, relative to its row's largest
	}{{8, 0, 0.5 / 127}, {4, 32, 1.5 / 8.5}, {4, 64, 1.5 / 8.5}} {
		ck, dir, qc := quantizedTiny(t, tc.bits, tc.group)
		got, gotQC, err := LoadQuantized(dir)
		if err != nil {
			t.Fatalf("%d bits: %v", tc.bits, err)
		}
		if gotQC.Bits != tc.bits || !gotQC.Symmetric || gotQC.Method != QuantMethodRTN {
			t.Errorf("quant_config %+v", gotQC)
		}
		// The tiny preset's down_proj rows are 172 wide: no group divides them.
		down := "model.layers.0.mlp.down_proj"
		if fell := slices.Contains(qc.PerChannel, down); fell != (tc.bits == 4) {
			t.Errorf("%d bits: per-channel fallback of %s recorded %v", tc.bits, down, fell)
		}
		if q := got.Tensors[down+".weight"].Quant; q == nil || q.GroupSize != 172 {
			t.Errorf("%d bits: %s loaded as %+v, want one scale per row", tc.bits, down, q)
		}
		if q := got.Tensors["model.layers.0.mlp.up_proj.weight"].Quant; tc.bits == 4 && q.GroupSize != tc.group {
			t.Errorf("up_proj group size %d, want %d", q.GroupSize, tc.group)
		}
		for _, w := range Layout(ck.Config) {
			a, b := ck.Tensors[w.Name], got.Tensors[w.Name]
			if (b.Quant != nil) != (len(w.Shape) == 2) {
				t.Errorf("%s: quantized %v", w.Name, b.Quant != nil)
			}
			var amax float64
			for _, v := range a.Data {
				amax = max(amax, math.Abs(float64(v)))
			}
			for i := range a.Data {
				if d := math.Abs(float64(a.Data[i] - b.Data[i])); d > tc.maxErr*amax*1.01+1e-7 {
					t.Fatalf("%d bits: %s[%d]: %v vs %v", tc.bits, w.Name, i, a.Data[i], b.Data[i])
				}
			}
		}
		info, err := Describe(dir)
		if err != nil {
			t.Fatal(err)
		}
		var params int64
		for _, w := range Layout(ck.Config) {
			params += int64(len(ck.Tensors[w.Name].Data))
		}
		if info.Parameters != params {
			t.Errorf("Describe: %d parameters, want %d", info.Parameters, params)
		}
		// Load (what model.Load calls) reads the quantized directory too.
		if ck2, err := Load(dir); err != nil || ck2.Tensors["model.embed_tokens.weight"].Quant == nil {
			t.Fatalf("Load of a quantized dir: %v", err)
		}
		var cfg map[string]any
		raw, _ := os.ReadFile(filepath.Join(dir, ConfigFile))
		_ = json.Unmarshal(raw, &cfg)
		if qcfg, ok := cfg["quantization_config"].(map[string]any); !ok || qcfg["quant_method"] != "gptq" || qcfg["bits"] != float64(tc.bits) {
			t.Errorf("config.json quantization_config %v", cfg["quantization_config"])
		}
	}
}

// A directory a GPTQ tool made has config.json's quantization_config and
// no quant_config.json; the v2 format stores the zero point as it is.
func TestLoadGPTQMadeElsewhere(t *testing.T) {
	_, dir, _ := quantizedTiny(t, 4, 32)
	want, _, err := LoadQuantized(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, QuantConfigFile)); err != nil {
		t.Fatal(err)
	}
	got, qc, err := LoadQuantized(dir)
	if err != nil {
		t.Fatal(err)
	}
	if qc.Method != QuantMethodGPTQ || qc.Bits != 4 {
		t.Errorf("quant config %+v", qc)
	}
	for name, w := range want.Tensors {
		if !slices.Equal(w.Data, got.Tensors[name].Data) {
			t.Fatalf("%s differs", name)
		}
	}
}

func TestQuantizeBadInput(t *testing.T) {
	for _, tc := range []struct{ bits, group int }{{3, 0}, {8, 32}, {4, 48}, {16, 0}} {
		if _, err := CheckQuantRequest(tc.bits, tc.group); !errors.Is(err, ErrQuant) {
			t.Errorf("bits %d group %d: %v, want ErrQuant", tc.bits, tc.group, err)
		}
	}
	_, dir, _ := quantizedTiny(t, 8, 0)
	// An unknown method in quant_config.json.
	qcPath := filepath.Join(dir, QuantConfigFile)
	raw, _ := os.ReadFile(qcPath)
	if err := os.WriteFile(qcPath, []byte(strings.Replace(string(raw), `"rtn"`, `"awqx"`, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadQuantized(dir); !errors.Is(err, ErrQuant) || !strings.Contains(err.Error(), QuantConfigFile) {
		t.Errorf("unknown method: %v", err)
	}
	if err := os.WriteFile(qcPath, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	// A truncated quantized tensor names the file and the tensor.
	path := filepath.Join(dir, WeightsFile)
	ts, err := readRawSafetensors(path)
	if err != nil {
		t.Fatal(err)
	}
	var entries []qRaw
	for _, e := range ts {
		if e.name == "model.layers.1.self_attn.o_proj.qweight" {
			e.shape = []int{e.shape[0] - 1, e.shape[1]}
			e.data = e.data[:len(e.data)-4*e.shape[1]]
		}
		entries = append(entries, e)
	}
	if err := writeRawSafetensors(path, entries, nil); err != nil {
		t.Fatal(err)
	}
	_, _, err = LoadQuantized(dir)
	if !errors.Is(err, ErrShape) || !strings.Contains(err.Error(), "o_proj.qweight") || !strings.Contains(err.Error(), WeightsFile) {
		t.Errorf("truncated qweight: %v", err)
	}
}

func TestF32ToF16(t *testing.T) {
	for _, v := range []float32{0, 1, -2.5, 0.000123, 65504, 1e-7, 3.14159} {
		h := f32ToF16(v)
		back := f16ToF32(h)
		if math.Abs(float64(back-v)) > math.Abs(float64(v))/1024+6e-8 {
			t.Errorf("%v -> %#x -> %v", v, h, back)
		}
	}
}

// A GPTQ directory in shards (model.safetensors.index.json) loads.
func TestLoadQuantizedShards(t *testing.T) {
	_, dir, _ := quantizedTiny(t, 8, 0)
	want, _, err := LoadQuantized(dir)
	if err != nil {
		t.Fatal(err)
	}
	ts, err := readRawSafetensors(filepath.Join(dir, WeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	shards := map[string][]qRaw{}
	index := map[string]string{}
	for name, e := range ts {
		shard := "model-00001-of-00002.safetensors"
		if strings.Contains(name, "layers.1") || strings.Contains(name, "lm_head") {
			shard = "model-00002-of-00002.safetensors"
		}
		shards[shard] = append(shards[shard], e)
		index[name] = shard
	}
	for shard, entries := range shards {
		if err := writeRawSafetensors(filepath.Join(dir, shard), entries, nil); err != nil {
			t.Fatal(err)
		}
	}
	idx, _ := json.Marshal(map[string]any{"weight_map": index})
	if err := os.WriteFile(filepath.Join(dir, WeightsIndexFile), idx, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, WeightsFile)); err != nil {
		t.Fatal(err)
	}
	got, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	for name, w := range want.Tensors {
		if !slices.Equal(w.Data, got.Tensors[name].Data) {
			t.Fatalf("%s differs", name)
		}
	}
}
