package checkpoint

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// floatTiny is the tiny preset's float checkpoint (seed 3).
func floatTiny(t *testing.T) *Checkpoint {
	t.Helper()
	src := t.TempDir()
	if err := Init("tiny", 3, src); err != nil {
		t.Fatal(err)
	}
	ck, err := Load(src)
	if err != nil {
		t.Fatal(err)
	}
	return ck
}

// quantizedTiny writes the tiny preset and its quantization at bits/group
// size, returning the float checkpoint and the quantized directory.
func quantizedTiny(t *testing.T, bits, group int) (*Checkpoint, string, QuantConfig) {
	t.Helper()
	ck := floatTiny(t)
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
			for i := range a.Data { // the embedding is rounded from its float16 values: their error too
				if d := math.Abs(float64(a.Data[i] - b.Data[i])); d > tc.maxErr*amax*1.01+math.Abs(float64(a.Data[i]))/2048+1e-7 {
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
		checkGPTQLoaderView(t, dir, ck.Config)
		// The embedding is float16 in the files, quantized at load as quantize did.
		mem, _, err := QuantizeCheckpoint(ck, tc.bits, tc.group)
		if err != nil {
			t.Fatal(err)
		}
		e := "model.embed_tokens.weight"
		if !slices.Equal(gotQC.AtLoad, []string{"model.embed_tokens"}) || !slices.Equal(qc.AtLoad, gotQC.AtLoad) {
			t.Errorf("quantized_at_load %v (saved %v)", gotQC.AtLoad, qc.AtLoad)
		}
		again := t.TempDir() // a loaded directory saves again as it was
		if err := SaveQuantized(again, got, gotQC); err != nil {
			t.Fatal(err)
		}
		if x, y := readEntry(t, dir, e), readEntry(t, again, e); !slices.Equal(x.data, y.data) {
			t.Errorf("%d bits: %s saved again differs", tc.bits, e)
		}
		if a, b := mem.Tensors[e].Quant, got.Tensors[e].Quant; a == nil || b == nil || !slices.Equal(a.Values, b.Values) || !slices.Equal(a.Scales, b.Scales) || a.GroupSize != b.GroupSize {
			t.Errorf("%d bits: the embedding quantized at load differs from quantize's", tc.bits)
		}
	}
}

// readEntry is the tensor name of dir's weights file, as stored.
func readEntry(t *testing.T, dir, name string) qRaw {
	t.Helper()
	ts, err := readRawSafetensors(filepath.Join(dir, WeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	return ts[name]
}

// checkGPTQLoaderView reads dir as a GPTQ loader (GPTQModel, transformers,
// vLLM) does: a float model.embed_tokens.weight, and each packed module's
// scales [ceil(in/g), out] with g quantization_config's group_size or the
// first "dynamic" pattern matching the module from its start (-1: [1, out]).
func checkGPTQLoaderView(t *testing.T, dir string, cfg Config) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, ConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	var top struct {
		Q struct {
			GroupSize int                                   `json:"group_size"`
			Dynamic   map[string]map[string]json.RawMessage `json:"dynamic"`
		} `json:"quantization_config"`
	}
	if err := json.Unmarshal(raw, &top); err != nil {
		t.Fatal(err)
	}
	ts, err := readRawSafetensors(filepath.Join(dir, WeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	if e, ok := ts["model.embed_tokens.weight"]; !ok || e.dtype != "F16" || !equalShape(e.shape, []int{cfg.VocabSize, cfg.HiddenSize}) {
		t.Errorf("model.embed_tokens.weight: %v %v (present %v), want F16 [%d, %d]", e.dtype, e.shape, ok, cfg.VocabSize, cfg.HiddenSize)
	}
	for _, w := range Layout(cfg) {
		m := quantModule(w.Name)
		sc, ok := ts[m+".scales"]
		if !ok {
			continue
		}
		g := top.Q.GroupSize
		for pat, ov := range top.Q.Dynamic { // the writer's patterns match one module each
			if regexp.MustCompile("^(?:" + strings.TrimPrefix(pat, "+:") + ")").MatchString(m) {
				_ = json.Unmarshal(ov["group_size"], &g)
			}
		}
		in, groups := w.Shape[1], 1
		if g > 0 {
			groups = (in + g - 1) / g
		}
		if !equalShape(sc.shape, []int{groups, w.Shape[0]}) {
			t.Errorf("%s.scales %v: a GPTQ loader expects [%d, %d] (group size %d)", m, sc.shape, groups, w.Shape[0], g)
		}
	}
}

// A tied model: the files hold the embedding in float16 and no lm_head (GPTQ
// loaders tie lm_head to it, lm_head false); this project quantizes it at
// load and the head is that matrix.
func TestQuantizeTiedEmbedding(t *testing.T) {
	ck := floatTiny(t)
	ck.Config.TieWordEmbeddings = true
	delete(ck.Tensors, "lm_head.weight")
	qck, qc, err := QuantizeCheckpoint(ck, 4, 32)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := SaveQuantized(dir, qck, qc); err != nil {
		t.Fatal(err)
	}
	checkGPTQLoaderView(t, dir, ck.Config)
	got, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if q := got.Tensors["model.embed_tokens.weight"].Quant; q == nil || q.Bits != 4 || q.GroupSize != 32 {
		t.Errorf("tied embedding loaded as %+v, want 4 bits in groups of 32", q)
	}
	if _, ok := got.Tensors["lm_head.weight"]; ok {
		t.Error("a tied model loaded an lm_head")
	}
	var cfg struct {
		Q map[string]any `json:"quantization_config"`
	}
	raw, _ := os.ReadFile(filepath.Join(dir, ConfigFile))
	if err := json.Unmarshal(raw, &cfg); err != nil || cfg.Q["lm_head"] != false {
		t.Errorf("quantization_config %v: want lm_head false", cfg.Q)
	}
}

// A directory a GPTQ tool made has config.json's quantization_config and
// no quant_config.json; the v2 format stores the zero point as it is. Read
// so, the embedding is the float weight GPTQ loaders read (only
// quant_config.json says to quantize it at load).
func TestLoadGPTQMadeElsewhere(t *testing.T) {
	ck, dir, _ := quantizedTiny(t, 4, 32)
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
		g := got.Tensors[name]
		if name == "model.embed_tokens.weight" {
			if g.Quant != nil || !slices.Equal(g.Data, w.Quant.float16) {
				t.Errorf("%s: loaded quantized %v, or not its float16 values", name, g.Quant != nil)
			}
			continue
		}
		if !slices.Equal(w.Data, g.Data) {
			t.Fatalf("%s differs", name)
		}
	}
	// Without quantization_config's dynamic, a GPTQ loader expects down_proj's
	// 172 columns in 6 groups of 32 (the last partial), not one per row.
	cfgPath := filepath.Join(dir, ConfigFile)
	cfgRaw, _ := os.ReadFile(cfgPath)
	noDynamic := func(m map[string]any) { delete(m["quantization_config"].(map[string]any), "dynamic") }
	editJSON(t, cfgPath, noDynamic)
	if _, _, err := LoadQuantized(dir); !errors.Is(err, ErrQuant) || !strings.Contains(err.Error(), `"model.layers.0.mlp.down_proj.scales"`) || !strings.Contains(err.Error(), cfgPath) {
		t.Errorf("per-channel scales with no dynamic override: %v", err)
	}
	// An override this loader does not take is refused, naming it.
	if err := os.WriteFile(cfgPath, cfgRaw, 0o644); err != nil {
		t.Fatal(err)
	}
	editJSON(t, cfgPath, func(m map[string]any) {
		m["quantization_config"].(map[string]any)["dynamic"] = map[string]any{`.*_proj`: map[string]any{"bits": 8}}
	})
	if _, _, err := LoadQuantized(dir); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), `dynamic ".*_proj": unsupported feature: bits 8`) {
		t.Errorf("a bits override: %v", err)
	}
	// The layout GPTQ tools write for those rows: scales [6, 64], the last
	// group 12 columns (g_idx c/32), loads as it is.
	editJSON(t, cfgPath, noDynamic)
	path := filepath.Join(dir, WeightsFile)
	ts, err := readRawSafetensors(path)
	if err != nil {
		t.Fatal(err)
	}
	partial := map[string]*QuantTensor{}
	for l := range ck.Config.NumLayers {
		m := fmt.Sprintf("model.layers.%d.mlp.down_proj", l)
		partial[m] = partialGroups(ck.Tensors[m+".weight"], 32)
		for _, e := range gptqTensors(m, partial[m]) {
			ts[e.name] = e
		}
	}
	entries := make([]qRaw, 0, len(ts))
	for _, e := range ts {
		entries = append(entries, e)
	}
	if err := writeRawSafetensors(path, entries, nil); err != nil {
		t.Fatal(err)
	}
	got, _, err = LoadQuantized(dir)
	if err != nil {
		t.Fatalf("partial last group: %v", err)
	}
	for m, q := range partial {
		g := got.Tensors[m+".weight"].Quant
		if g == nil || g.GroupSize != 32 || g.Groups() != 6 || !slices.Equal(g.Values, q.Values) || !slices.Equal(g.Scales, q.Scales) {
			t.Fatalf("%s: loaded %+v", m, g)
		}
		if !slices.Equal(got.Tensors[m+".weight"].Data, q.Dequantize().Data) {
			t.Errorf("%s: dequantized values differ", m)
		}
	}
}

// partialGroups quantizes t to 4 bits in groups of g columns, the last group
// of each row shorter where g does not divide it (GPTQ tools' layout).
func partialGroups(t *Tensor, g int) *QuantTensor {
	rows, cols := t.Shape[0], t.Shape[1]
	q := &QuantTensor{Bits: 4, GroupSize: g, Rows: rows, Cols: cols, Values: make([]int8, rows*cols)}
	for r := range rows {
		for c0 := 0; c0 < cols; c0 += g {
			vals := t.Data[r*cols+c0 : r*cols+min(c0+g, cols)]
			s := GroupScale(vals, 4)
			q.Scales = append(q.Scales, s)
			for i, v := range vals {
				if s != 0 {
					q.Values[r*cols+c0+i] = roundQ(v, s, 7)
				}
			}
		}
	}
	return q
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
