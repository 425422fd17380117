package checkpoint

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
)

// The quantized directory (§4.3) in GPTQ's packed layout, as AutoGPTQ and
// GPTQModel write it, so that their loaders (transformers, vLLM) read it and
// directories they made load here: each quantized linear module M keeps
// M.qweight (int32 [in/pack, out]: pack = 32/bits values along the input,
// the lowest bits first, each stored plus the zero point 2^(bits-1)),
// M.qzeros (int32 [groups, out/pack]: the zero point, less one in the
// original "gptq" checkpoint format), M.scales (float16 [groups, out]) and
// M.g_idx (int32 [in]: each input's group). config.json carries
// quantization_config; quant_config.json states the method, bits, group
// size, symmetry, the modules quantized and those that fell back to one
// scale per output channel. A length that pack does not divide is padded
// with zero values (g_idx keeps the true length).

// QuantConfig is quant_config.json.
type QuantConfig struct {
	Method    string   `json:"method"`     // QuantMethodRTN, QuantMethodGPTQ or QuantMethodGGUF
	Bits      int      `json:"bits"`       // 8 or 4
	GroupSize int      `json:"group_size"` // columns per scale; -1: one scale per output channel
	Symmetric bool     `json:"sym"`        // always true: no zero point
	Format    string   `json:"format"`     // "gptq": the tensor layout
	Modules   []string `json:"modules"`    // the quantized weights (Hugging Face names, less ".weight")
	// PerChannel lists the modules whose row length the group size does not
	// divide: they hold one scale per output channel.
	PerChannel []string `json:"per_channel_fallback,omitempty"`
	// Float lists the weights left in float (norms, biases).
	Float []string `json:"not_quantized"`
	// AtLoad lists the quantized modules the files hold in float16, as GPTQ
	// loaders read them (the embedding): quantized when loaded, round to
	// nearest at Bits and GroupSize (quant_loaders.go).
	AtLoad []string `json:"quantized_at_load,omitempty"`
	// Calibration describes the data a calibrated method (GPTQ) used.
	Calibration string `json:"calibration,omitempty"`
	// Activations, ActivationsQ8_0 for weights imported from GGUF's Q8_0
	// and Q4_0: products round the activations to Q8_0 blocks as llama.cpp
	// does (the modules with groups of 32), so the model computes llama.cpp's
	// tokens. Empty: float activations.
	Activations string `json:"activations,omitempty"`
}

// ActivationsQ8_0 is QuantConfig.Activations for llama.cpp's products.
const ActivationsQ8_0 = "q8_0"

// gptqConfig is config.json's quantization_config.
type gptqConfig struct {
	QuantMethod      string `json:"quant_method"`
	Bits             int    `json:"bits"`
	GroupSize        int    `json:"group_size"`
	Sym              *bool  `json:"sym,omitempty"`
	DescAct          bool   `json:"desc_act"`
	CheckpointFormat string `json:"checkpoint_format,omitempty"`
	// LMHead is GPTQModel's flag for a quantized lm_head (lm_head.qweight).
	LMHead *bool `json:"lm_head,omitempty"`
	// Dynamic is GPTQModel's per-module override (quant_loaders.go).
	Dynamic gptqDynamic `json:"dynamic,omitempty"`
}

// quantModule is the prefix of a weight's GPTQ tensors: its name less ".weight".
func quantModule(name string) string { return strings.TrimSuffix(name, ".weight") }

// QuantizeCheckpoint quantizes every weight matrix of ck (bits 8 or 4,
// group size for 4 bits; CheckQuantRequest) and returns the quantized
// checkpoint: Tensors hold the dequantized values (what the graph engine
// and training read), each matrix's Tensor.Quant the quantized form.
func QuantizeCheckpoint(ck *Checkpoint, bits, groupSize int) (*Checkpoint, QuantConfig, error) {
	g, err := CheckQuantRequest(bits, groupSize)
	if err != nil {
		return nil, QuantConfig{}, err
	}
	qc := QuantConfig{Method: QuantMethodRTN, Bits: bits, GroupSize: g, Symmetric: true, Format: "gptq"}
	if g == 0 {
		qc.GroupSize = -1
	}
	out := &Checkpoint{Config: ck.Config, Generation: ck.Generation, Tensors: map[string]*Tensor{}}
	for _, w := range Layout(ck.Config) {
		t, ok := ck.Tensors[w.Name]
		if !ok {
			return nil, qc, fmt.Errorf("quantize: tensor %q: %w", w.Name, ErrMissingTensor)
		}
		if len(w.Shape) != 2 {
			out.Tensors[w.Name] = t
			qc.Float = append(qc.Float, w.Name)
			continue
		}
		atLoad := quantizedAtLoad(w)
		if atLoad {
			t = f16Values(t) // as the files hold it, so loading rounds the same values
		}
		q, fell, err := Quantize(t, bits, g)
		if err != nil {
			return nil, qc, fmt.Errorf("quantize: tensor %q: %w", w.Name, err)
		}
		if atLoad {
			q.float16 = t.Data // what the files hold
			qc.AtLoad = append(qc.AtLoad, quantModule(w.Name))
		}
		dq := q.Dequantize()
		dq.Quant = q
		out.Tensors[w.Name] = dq
		qc.Modules = append(qc.Modules, quantModule(w.Name))
		if fell {
			qc.PerChannel = append(qc.PerChannel, quantModule(w.Name))
		}
	}
	return out, qc, nil
}

// SaveQuantized writes a quantized checkpoint (QuantizeCheckpoint, or
// weights imported quantized) into dir: config.json with
// quantization_config, generation_config.json, quant_config.json and
// model.safetensors in GPTQ's layout.
func SaveQuantized(dir string, ck *Checkpoint, qc QuantConfig) error {
	if err := CheckTensors(ck.Config, ck.Tensors, dir); err != nil {
		return fmt.Errorf("save quantized: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("save quantized: %w", err)
	}
	var entries []qRaw
	for name, t := range ck.Tensors {
		if t.Quant == nil {
			entries = append(entries, qRaw{name: name, dtype: "F32", shape: t.Shape, data: le32f(t.Data)})
			continue
		}
		if t.Quant.Bits != qc.Bits {
			return fmt.Errorf("save quantized %s: tensor %q: %w: %d bits in a %d-bit checkpoint", dir, name, ErrQuant, t.Quant.Bits, qc.Bits)
		}
		if slices.Contains(qc.AtLoad, quantModule(name)) {
			if len(t.Quant.float16) != len(t.Data) {
				return fmt.Errorf("save quantized %s: tensor %q: %w: %s lists it as quantized at load, but it holds no float values to write", dir, name, ErrQuant, QuantConfigFile)
			}
			h := make([]uint16, len(t.Data))
			for i, v := range t.Quant.float16 {
				h[i] = f32ToF16(v)
			}
			entries = append(entries, qRaw{name: name, dtype: "F16", shape: t.Shape, data: le16(h)})
			continue
		}
		entries = append(entries, gptqTensors(quantModule(name), t.Quant)...)
	}
	if err := writeRawSafetensors(filepath.Join(dir, WeightsFile), entries, map[string]string{"format": "pt", "quant_method": qc.Method}); err != nil {
		return err
	}
	if err := os.Remove(filepath.Join(dir, WeightsIndexFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("save quantized: remove stale shard index: %w", err)
	}
	if err := writeJSONAtomic(filepath.Join(dir, GenerationConfigFile), ck.Generation); err != nil {
		return err
	}
	if err := writeJSONAtomic(filepath.Join(dir, QuantConfigFile), qc); err != nil {
		return err
	}
	cfg := ck.Config
	cfg.TorchDtype = "float16"
	raw, err := json.Marshal(cfg)
	if err != nil {
		return fmt.Errorf("save quantized: %w", err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return fmt.Errorf("save quantized: %w", err)
	}
	sym := true
	gs := qc.GroupSize
	lmHead := slices.Contains(qc.Modules, "lm_head")
	m["quantization_config"] = gptqConfig{QuantMethod: "gptq", Bits: qc.Bits, GroupSize: gs, Sym: &sym, CheckpointFormat: "gptq", LMHead: &lmHead,
		Dynamic: dynamicFor(ck, gs, qc.AtLoad)}
	return writeJSONAtomic(filepath.Join(dir, ConfigFile), m)
}

// gptqTensors packs q as module's qweight, qzeros, scales and g_idx.
func gptqTensors(module string, q *QuantTensor) []qRaw {
	pack := 32 / q.Bits
	zero := int32(1) << (q.Bits - 1)
	mask := uint32(1)<<q.Bits - 1
	inP, outP := (q.Cols+pack-1)/pack, (q.Rows+pack-1)/pack
	groups := q.Groups()
	qweight := make([]uint32, inP*q.Rows)
	for i := range inP * pack {
		for o := range q.Rows {
			v := zero
			if i < q.Cols {
				v += int32(q.Values[o*q.Cols+i])
			}
			qweight[(i/pack)*q.Rows+o] |= (uint32(v) & mask) << (q.Bits * (i % pack))
		}
	}
	qzeros := make([]uint32, groups*outP)
	for g := range groups {
		for o := range outP * pack {
			qzeros[g*outP+o/pack] |= uint32(zero-1) & mask << (q.Bits * (o % pack))
		}
	}
	scales := make([]uint16, groups*q.Rows)
	for o := range q.Rows {
		for g := range groups {
			scales[g*q.Rows+o] = f32ToF16(q.Scales[o*groups+g])
		}
	}
	gidx := make([]uint32, q.Cols)
	for c := range gidx {
		gidx[c] = uint32(c / q.GroupSize)
	}
	return []qRaw{
		{name: module + ".qweight", dtype: "I32", shape: []int{inP, q.Rows}, data: le32(qweight)},
		{name: module + ".qzeros", dtype: "I32", shape: []int{groups, outP}, data: le32(qzeros)},
		{name: module + ".scales", dtype: "F16", shape: []int{groups, q.Rows}, data: le16(scales)},
		{name: module + ".g_idx", dtype: "I32", shape: []int{q.Cols}, data: le32(gidx)},
	}
}

// IsQuantized reports whether dir holds a quantized checkpoint: a
// quant_config.json, or a config.json with quantization_config.
func IsQuantized(dir string) (bool, error) {
	if _, err := os.Stat(filepath.Join(dir, QuantConfigFile)); err == nil {
		return true, nil
	}
	qc, err := readGPTQConfig(dir)
	return qc != nil, err
}

// readGPTQConfig reads config.json's quantization_config (nil when absent).
func readGPTQConfig(dir string) (*gptqConfig, error) {
	data, err := os.ReadFile(filepath.Join(dir, ConfigFile))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", filepath.Join(dir, ConfigFile), err)
	}
	var top struct {
		Q *gptqConfig `json:"quantization_config"`
	}
	if err := json.Unmarshal(data, &top); err != nil {
		return nil, fmt.Errorf("%s: %w: %v", filepath.Join(dir, ConfigFile), ErrInvalidConfig, err)
	}
	return top.Q, nil
}

// LoadQuantized reads a quantized directory: its own (quant_config.json)
// or one a GPTQ tool made (config.json's quantization_config alone). Each
// quantized matrix comes back dequantized in Tensor.Data with its
// quantized form in Tensor.Quant.
func LoadQuantized(dir string) (*Checkpoint, QuantConfig, error) {
	var qc QuantConfig
	cfgPath := filepath.Join(dir, ConfigFile)
	gq, err := readGPTQConfig(dir)
	if err != nil {
		return nil, qc, err
	}
	qcPath := filepath.Join(dir, QuantConfigFile)
	declared := cfgPath // the file that states bits and group size
	data, err := os.ReadFile(qcPath)
	switch {
	case err == nil:
		if err := json.Unmarshal(data, &qc); err != nil {
			return nil, qc, fmt.Errorf("%s: %w: %v", qcPath, ErrInvalidConfig, err)
		}
		switch qc.Method {
		case QuantMethodRTN, QuantMethodGPTQ, QuantMethodGGUF:
		default:
			return nil, qc, fmt.Errorf("%s: %w: method %q (want %s, %s or %s)", qcPath, ErrQuant, qc.Method, QuantMethodRTN, QuantMethodGPTQ, QuantMethodGGUF)
		}
		if qc.Activations != "" && qc.Activations != ActivationsQ8_0 {
			return nil, qc, fmt.Errorf("%s: %w: activations %q (want %q or none)", qcPath, ErrQuant, qc.Activations, ActivationsQ8_0)
		}
		if !qc.Symmetric {
			return nil, qc, fmt.Errorf("%s: %w: asymmetric quantization (sym false) is not supported", qcPath, ErrUnsupported)
		}
		if err := checkQuantConfigs(dir, qc, gq); err != nil {
			return nil, qc, err
		}
		declared = qcPath
	case errors.Is(err, os.ErrNotExist):
		if gq == nil {
			return nil, qc, fmt.Errorf("%s: %w: neither %s nor quantization_config", dir, ErrQuant, QuantConfigFile)
		}
		if gq.QuantMethod != "gptq" {
			return nil, qc, fmt.Errorf("%s: quantization_config: %w: quant_method %q (want gptq)", cfgPath, ErrQuant, gq.QuantMethod)
		}
		if gq.DescAct {
			return nil, qc, fmt.Errorf("%s: quantization_config: %w: desc_act (act-order) is not supported", cfgPath, ErrUnsupported)
		}
		if gq.Sym != nil && !*gq.Sym {
			return nil, qc, fmt.Errorf("%s: quantization_config: %w: sym false (asymmetric) is not supported", cfgPath, ErrUnsupported)
		}
		qc = QuantConfig{Method: QuantMethodGPTQ, Bits: gq.Bits, GroupSize: gq.GroupSize, Symmetric: true, Format: "gptq"}
	default:
		return nil, qc, fmt.Errorf("read %s: %w", qcPath, err)
	}
	if qc.Bits != 4 && qc.Bits != 8 {
		return nil, qc, fmt.Errorf("%s: %w: %d bits (want 8 or 4)", declared, ErrQuant, qc.Bits)
	}
	v2 := gq != nil && gq.CheckpointFormat == "gptq_v2"
	cfg, err := LoadConfig(dir)
	if err != nil {
		return nil, qc, err
	}
	gen, err := LoadGenerationConfig(dir)
	if err != nil {
		return nil, qc, err
	}
	files, _, err := weightFiles(dir) // model.safetensors or the shards of its index
	if err != nil {
		return nil, qc, err
	}
	path := files[0]
	if len(files) > 1 {
		path = filepath.Join(dir, WeightsIndexFile)
	}
	raw := map[string]qRaw{}
	for _, f := range files {
		part, err := readRawSafetensors(f)
		if err != nil {
			return nil, qc, err
		}
		for name, t := range part {
			raw[name] = t
		}
	}
	if err := checkLMHeadFlag(cfgPath, path, gq, raw); err != nil {
		return nil, qc, err
	}
	for _, m := range qc.AtLoad {
		if !slices.ContainsFunc(Layout(cfg), func(w Weight) bool { return quantizedAtLoad(w) && quantModule(w.Name) == m }) {
			return nil, qc, fmt.Errorf("%s: %w: quantized_at_load lists %q (only the embedding is)", qcPath, ErrQuant, m)
		}
	}
	listed := declared == qcPath
	tensors := map[string]*Tensor{}
	for _, w := range Layout(cfg) {
		module := quantModule(w.Name)
		_, packed := raw[module+".qweight"]
		atLoad := slices.Contains(qc.AtLoad, module)
		cfgGroup, cfgFloat := 0, false // config.json's view of the module (quant_loaders.go)
		if gq != nil && len(w.Shape) == 2 {
			if cfgGroup, cfgFloat, err = gq.dynamicGroup(cfgPath, module, w.Shape[1]); err != nil {
				return nil, qc, err
			}
		}
		switch {
		case atLoad && packed:
			return nil, qc, fmt.Errorf("%s: tensor %q: %w: %s lists %s as quantized at load, so the files hold it in float", path, module+".qweight", ErrQuant, qcPath, module)
		case cfgFloat && packed:
			return nil, qc, fmt.Errorf("%s: tensor %q: %w: %s's quantization_config dynamic leaves %s float", path, module+".qweight", ErrQuant, cfgPath, module)
		}
		if !packed {
			t, ok := raw[w.Name]
			if !ok {
				return nil, qc, fmt.Errorf("%s: tensor %q: %w", path, w.Name, ErrMissingTensor)
			}
			ft, err := t.float32s(path)
			if err != nil {
				return nil, qc, err
			}
			if atLoad {
				if ft, err = quantizeLoaded(ft, qc); err != nil {
					return nil, qc, fmt.Errorf("%s: tensor %q: %w", path, w.Name, err)
				}
			}
			tensors[w.Name] = ft
			continue
		}
		if len(w.Shape) != 2 {
			return nil, qc, fmt.Errorf("%s: tensor %q: %w: a quantized tensor where the model needs a vector", path, module+".qweight", ErrShape)
		}
		want := cfgGroup // made elsewhere: config.json states each module's groups
		if listed {
			if want, err = groupsWanted(qc, declared, path, module, w.Shape[1]); err != nil {
				return nil, qc, err
			}
		}
		q, err := unpackGPTQ(raw, module, qc.Bits, w.Shape, want, v2, path)
		if err != nil {
			return nil, qc, err
		}
		if err := checkQuantGroups(qc, declared, path, module, q, want); err != nil {
			return nil, qc, err
		}
		if listed && gq != nil && gq.Dynamic != nil && cfgGroup != q.GroupSize {
			return nil, qc, fmt.Errorf("%s: quantization_config: %w: groups of %d for %s, but %s holds groups of %d (%s)",
				cfgPath, ErrQuant, cfgGroup, module, path, q.GroupSize, qcPath)
		}
		q.LlamaQ8 = qc.Activations == ActivationsQ8_0 && q.GroupSize == 32
		t := q.Dequantize()
		t.Quant = q
		tensors[w.Name] = t
	}
	if err := CheckTensors(cfg, tensors, path); err != nil {
		return nil, qc, err
	}
	return &Checkpoint{Config: cfg, Generation: gen, Tensors: tensors}, qc, nil
}

// unpackGPTQ reads module's qweight, qzeros, scales and g_idx (optional)
// into a QuantTensor of shape [rows, cols].
//
// glen is the group length the directory states (0: not stated): scales
// [ceil(cols/glen), rows] hold groups of glen, the last one shorter where
// glen does not divide cols (as GPTQ tools write such a row); otherwise the
// scales' groups must divide cols.
func unpackGPTQ(raw map[string]qRaw, module string, bits int, shape []int, glen int, v2 bool, path string) (*QuantTensor, error) {
	rows, cols := shape[0], shape[1]
	pack := 32 / bits
	inP, outP := (cols+pack-1)/pack, (rows+pack-1)/pack
	get := func(suffix, dtype string, dims ...int) (qRaw, error) {
		t, ok := raw[module+suffix]
		if !ok {
			return t, fmt.Errorf("%s: tensor %q: %w", path, module+suffix, ErrMissingTensor)
		}
		if t.dtype != dtype {
			return t, fmt.Errorf("%s: tensor %q: %w %s (want %s)", path, module+suffix, ErrDType, t.dtype, dtype)
		}
		if dims != nil && !equalShape(t.shape, dims) {
			return t, fmt.Errorf("%s: tensor %q: %w: %v, want %v for a [%d, %d] weight at %d bits", path, module+suffix, ErrShape, t.shape, dims, rows, cols, bits)
		}
		return t, nil
	}
	qw, err := get(".qweight", "I32", inP, rows)
	if err != nil {
		return nil, err
	}
	sc, err := get(".scales", "F16")
	if err != nil {
		return nil, err
	}
	partial := glen > 0 && cols%glen != 0 && len(sc.shape) == 2 && sc.shape[0] == (cols+glen-1)/glen
	if len(sc.shape) != 2 || sc.shape[1] != rows || sc.shape[0] < 1 || cols%sc.shape[0] != 0 && !partial {
		return nil, fmt.Errorf("%s: tensor %q: %w: %v, want [groups, %d] with groups dividing %d", path, module+".scales", ErrShape, sc.shape, rows, cols)
	}
	groups := sc.shape[0]
	gsize := cols / groups
	if partial {
		gsize = glen
	}
	qz, err := get(".qzeros", "I32", groups, outP)
	if err != nil {
		return nil, err
	}
	q := &QuantTensor{Bits: bits, GroupSize: gsize, Rows: rows, Cols: cols, Values: make([]int8, rows*cols), Scales: make([]float32, rows*groups)}
	if gi, ok := raw[module+".g_idx"]; ok {
		if gi.dtype != "I32" || !equalShape(gi.shape, []int{cols}) {
			return nil, fmt.Errorf("%s: tensor %q: %w: %s %v, want I32 [%d]", path, module+".g_idx", ErrShape, gi.dtype, gi.shape, cols)
		}
		for c := range cols {
			if g := int(binary.LittleEndian.Uint32(gi.data[4*c:])); g != c/q.GroupSize {
				return nil, fmt.Errorf("%s: tensor %q: %w: input %d in group %d, want %d (act-order is not supported)", path, module+".g_idx", ErrUnsupported, c, g, c/q.GroupSize)
			}
		}
	}
	mask := uint32(1)<<bits - 1
	zero := uint32(1) << (bits - 1)
	for g := range groups {
		for o := range rows {
			z := binary.LittleEndian.Uint32(qz.data[4*(g*outP+o/pack):]) >> (bits * (o % pack)) & mask
			if !v2 {
				z++
			}
			if z != zero {
				return nil, fmt.Errorf("%s: tensor %q: %w: zero point %d at group %d, row %d (only symmetric, %d)", path, module+".qzeros", ErrUnsupported, z, g, o, zero)
			}
			q.Scales[o*groups+g] = f16ToF32(binary.LittleEndian.Uint16(sc.data[2*(g*rows+o):]))
		}
	}
	for i := range cols {
		for o := range rows {
			u := binary.LittleEndian.Uint32(qw.data[4*((i/pack)*rows+o):]) >> (bits * (i % pack)) & mask
			q.Values[o*cols+i] = int8(int32(u) - int32(zero))
		}
	}
	if bits == 8 {
		for i, v := range q.Values {
			if v == -128 {
				return nil, fmt.Errorf("%s: tensor %q: %w: value -128 at %d (symmetric 8-bit values lie in [-127, 127])", path, module+".qweight", ErrQuant, i)
			}
		}
	}
	return q, nil
}

// qRaw is one safetensors tensor's bytes, of any dtype.
type qRaw struct {
	name, dtype string
	shape       []int
	data        []byte
}

// float32s converts a float tensor to a Tensor.
func (t qRaw) float32s(path string) (*Tensor, error) {
	if t.dtype != "F32" && t.dtype != "F16" && t.dtype != "BF16" {
		return nil, fmt.Errorf("%s: tensor %q: %w %q (want F32, F16 or BF16)", path, t.name, ErrDType, t.dtype)
	}
	return readTensorData(bytes.NewReader(t.data), 0, t.dtype, t.shape, path, t.name)
}

// readRawSafetensors reads every tensor of a safetensors file as bytes,
// the header checked by readSTHeader.
func readRawSafetensors(path string) (map[string]qRaw, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("open safetensors: %w", err)
	}
	h, err := readSTHeader(bytes.NewReader(data), int64(len(data)), path)
	if err != nil {
		return nil, err
	}
	out := make(map[string]qRaw, len(h.Entries))
	for _, e := range h.Entries {
		out[e.Name] = qRaw{name: e.Name, dtype: e.DType, shape: e.Shape, data: data[h.DataBase+e.DataOffsets[0] : h.DataBase+e.DataOffsets[1]]}
	}
	return out, nil
}

// writeRawSafetensors writes entries (sorted by name) with an 8-byte
// aligned header, atomically.
func writeRawSafetensors(path string, entries []qRaw, metadata map[string]string) error {
	sort.Slice(entries, func(i, j int) bool { return entries[i].name < entries[j].name })
	header := map[string]any{"__metadata__": metadata}
	var off int64
	for _, e := range entries {
		end := off + int64(len(e.data))
		shape := e.shape
		if shape == nil {
			shape = []int{}
		}
		header[e.name] = map[string]any{"dtype": e.dtype, "shape": shape, "data_offsets": [2]int64{off, end}}
		off = end
	}
	hb, err := json.Marshal(header)
	if err != nil {
		return fmt.Errorf("write safetensors %s: encode header: %w", path, err)
	}
	pad := (8 - len(hb)%8) % 8
	file := binary.LittleEndian.AppendUint64(nil, uint64(len(hb)+pad))
	file = append(append(file, hb...), bytes.Repeat([]byte{' '}, pad)...)
	for _, e := range entries {
		file = append(file, e.data...)
	}
	return writeAtomic(path, func(w io.Writer) error {
		_, err := w.Write(file)
		return err
	})
}

func le32f(v []float32) []byte {
	out := make([]byte, 0, 4*len(v))
	for _, x := range v {
		out = binary.LittleEndian.AppendUint32(out, math.Float32bits(x))
	}
	return out
}

func le32(v []uint32) []byte {
	out := make([]byte, 0, 4*len(v))
	for _, x := range v {
		out = binary.LittleEndian.AppendUint32(out, x)
	}
	return out
}

func le16(v []uint16) []byte {
	out := make([]byte, 0, 2*len(v))
	for _, x := range v {
		out = binary.LittleEndian.AppendUint16(out, x)
	}
	return out
}

// f32ToF16 rounds a float32 to the nearest float16 (ties to even),
// overflowing to infinity and underflowing through the subnormals.
func f32ToF16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int(b>>23&0xff) - 127 + 15
	man := b & 0x7fffff
	switch {
	case b&0x7fffffff == 0:
		return sign
	case int(b>>23&0xff) == 0xff:
		if man != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	case exp >= 0x1f:
		return sign | 0x7c00
	case exp <= 0:
		if exp < -10 {
			return sign
		}
		man |= 0x800000
		shift := uint(14 - exp)
		half := uint32(1) << (shift - 1)
		r := man >> shift
		if rem := man & (1<<shift - 1); rem > half || rem == half && r&1 == 1 {
			r++
		}
		return sign | uint16(r)
	}
	r := uint32(exp)<<10 | man>>13
	if rem := man & 0x1fff; rem > 0x1000 || rem == 0x1000 && r&1 == 1 {
		r++ // may carry into the exponent, up to infinity: still right
	}
	return sign | uint16(r)
}

// QuantizeDir quantizes the float checkpoint in src (QuantizeCheckpoint)
// into dst, with src's tokenizer files. A src already quantized is refused.
func QuantizeDir(src, dst string, bits, groupSize int) (QuantConfig, error) {
	if q, err := IsQuantized(src); err != nil || q {
		if err == nil {
			err = fmt.Errorf("%s: %w: already quantized", src, ErrQuant)
		}
		return QuantConfig{}, err
	}
	ck, err := Load(src)
	if err != nil {
		return QuantConfig{}, err
	}
	qck, qc, err := QuantizeCheckpoint(ck, bits, groupSize)
	if err != nil {
		return qc, fmt.Errorf("%s: %w", src, err)
	}
	if err := SaveQuantized(dst, qck, qc); err != nil {
		return qc, err
	}
	if _, err := os.Stat(filepath.Join(src, TokenizerFile)); err == nil {
		if _, err := CopyTokenizer(src, dst); err != nil {
			return qc, err
		}
	}
	return qc, nil
}
