package checkpoint

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strings"
)

// What makes a quantized directory loadable by GPTQ tools (GPTQModel,
// transformers' GPTQ integration, vLLM) beyond the packed layout:
//
//   - The embedding is a float weight to them (GPTQModel quantizes lm_head
//     when lm_head is true, never the embedding), so the files hold
//     model.embed_tokens.weight in float16 and quant_config.json lists the
//     module under quantized_at_load: this project rounds it to nearest when
//     it loads it, at the directory's bits and group size, exactly as
//     quantize did (quantize rounds the float16 values the files hold), so
//     the weights in memory stay quantized. A tied head is that matrix.
//   - A module whose scales are not the directory's group size (a per-channel
//     fallback where the group size does not divide a row, a GGUF block
//     size) is stated in quantization_config's "dynamic", GPTQModel's
//     per-module override (vLLM reads it too): {"+:^module$": {"group_size":
//     -1}}, so a loader expects scales [1, out] there rather than
//     [ceil(in/group), out]. A pattern with "-:" leaves a module float.
//   - Directories GPTQ tools made with a group size that does not divide a
//     row hold a partial last group (scales [ceil(in/group), out], g_idx
//     c/group): such a module loads as it is, its last group shorter.

// quantizedAtLoad reports whether w is a weight the files hold in float
// that quantize records as quantized_at_load: the embedding.
func quantizedAtLoad(w Weight) bool { return w.Layer < 0 && w.Module == "embed_tokens" }

// f16Values returns t with its values rounded to float16, as the files hold them.
func f16Values(t *Tensor) *Tensor {
	out := &Tensor{Shape: t.Shape, Data: make([]float32, len(t.Data))}
	for i, v := range t.Data {
		out.Data[i] = F16Round(v)
	}
	return out
}

// quantizeLoaded quantizes a weight listed in qc.AtLoad as quantize did:
// round to nearest at qc's bits and group size (one scale per row where the
// group size does not divide it). It returns the weight dequantized, as
// every quantized matrix loads, its quantized form in Quant.
func quantizeLoaded(t *Tensor, qc QuantConfig) (*Tensor, error) {
	q, _, err := Quantize(t, qc.Bits, max(qc.GroupSize, 0))
	if err != nil {
		return nil, err
	}
	q.float16 = t.Data
	dq := q.Dequantize()
	dq.Quant = q
	return dq, nil
}

// gptqDynamic is quantization_config's "dynamic" in its order (GPTQModel
// and vLLM take the first pattern that matches a module's name from its
// start).
type gptqDynamic []dynamicRule

// dynamicRule is one pattern of gptqDynamic and its overrides.
type dynamicRule struct {
	pattern  string // as written: "+:" (or no prefix) overrides, "-:" leaves the module float
	re       *regexp.Regexp
	override map[string]any
}

func (d gptqDynamic) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, r := range d {
		if i > 0 {
			b.WriteByte(',')
		}
		k, err := json.Marshal(r.pattern)
		if err != nil {
			return nil, err
		}
		v, err := json.Marshal(r.override)
		if err != nil {
			return nil, err
		}
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

func (d *gptqDynamic) UnmarshalJSON(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return fmt.Errorf("dynamic: want an object of patterns")
	}
	*d = nil
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return fmt.Errorf("dynamic: %w", err)
		}
		pat := tok.(string)
		var ov map[string]any
		if err := dec.Decode(&ov); err != nil {
			return fmt.Errorf("dynamic %q: %w", pat, err)
		}
		expr, _ := strings.CutPrefix(strings.TrimPrefix(pat, "+:"), "-:")
		re, err := regexp.Compile("^(?:" + expr + ")")
		if err != nil {
			return fmt.Errorf("dynamic %q: %w", pat, err)
		}
		*d = append(*d, dynamicRule{pattern: pat, re: re, override: ov})
	}
	return nil
}

// dynamicGroup is the scale group length config.json's quantization_config
// gives module's rows of cols: its group_size, or a dynamic pattern's, the
// whole row when the group covers it (or is -1); float when a "-:" pattern
// matches. Overrides this loader does not take (other bits, act-order,
// asymmetric, fields it does not know) are refused, naming the pattern.
func (gq *gptqConfig) dynamicGroup(cfgPath, module string, cols int) (glen int, float bool, err error) {
	g := gq.GroupSize
	for _, r := range gq.Dynamic {
		if !r.re.MatchString(module) {
			continue
		}
		if strings.HasPrefix(r.pattern, "-:") {
			return 0, true, nil
		}
		for k, v := range r.override {
			bad := false
			switch k {
			case "group_size":
				f, ok := v.(float64)
				bad = !ok || f != math.Trunc(f)
				g = int(f)
			case "bits":
				bad = v != float64(gq.Bits)
			case "desc_act":
				bad = v != false
			case "sym":
				bad = v != true
			default:
				bad = true
			}
			if bad {
				return 0, false, fmt.Errorf("%s: quantization_config: dynamic %q: %w: %s %v for %s (this loader takes group_size, and bits, desc_act, sym as the directory's)",
					cfgPath, r.pattern, ErrUnsupported, k, v, module)
			}
		}
		break
	}
	return groupLen(g, cols), false, nil
}

// groupLen is the length of a group of size g in rows of cols: g, or cols
// when g is not positive or covers the row.
func groupLen(g, cols int) int {
	if g <= 0 || g >= cols {
		return cols
	}
	return g
}

// dynamicFor states, for GPTQ loaders, each quantized module of ck whose
// scale groups are not the directory's group size (groupSize): a pattern
// matching that module alone with its group_size (-1: one per row).
func dynamicFor(ck *Checkpoint, groupSize int, atLoad []string) gptqDynamic {
	var d gptqDynamic
	for _, w := range Layout(ck.Config) {
		t := ck.Tensors[w.Name]
		module := quantModule(w.Name)
		if t == nil || t.Quant == nil || slices.Contains(atLoad, module) {
			continue
		}
		q := t.Quant
		if groupLen(q.GroupSize, q.Cols) == groupLen(groupSize, q.Cols) {
			continue
		}
		g := q.GroupSize
		if g >= q.Cols {
			g = -1
		}
		d = append(d, dynamicRule{pattern: "+:^" + regexp.QuoteMeta(module) + "$", override: map[string]any{"group_size": g}})
	}
	return d
}
