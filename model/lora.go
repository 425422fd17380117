package model

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/largeforge/largeforge/model/checkpoint"
	"github.com/largeforge/largeforge/schemas"
)

// Many LoRA adapters on one base, unmerged: an Adapter holds a PEFT LoRA
// adapter (§4.2) beside the base Model's weights instead of merged into a
// copy of them, so one Model serves any number of adapters. A request names
// its adapter (GenerateRequest.Adapter, ScoreAdapted); the native engine
// runs a batch that mixes adapters and the base with each product of a
// layer computed once for every row, x·Wᵀ, and then, for each adapter's
// rows, x·A_iᵀ·(scale·B_i)ᵀ added, for the modules the adapter targets.
// The result equals the merged model's, W + scale·B·A, up to float
// rounding.

// LoRA adapter files (§4.2), as PEFT names them.
const (
	AdapterConfigFile  = "adapter_config.json"
	AdapterWeightsFile = "adapter_model.safetensors"
)

// ErrAdapter: a LoRA adapter does not fit its base model (a tensor the base
// lacks or of another shape, a rank over schemas.MaxLoraRank, a missing
// lora_B) or is not one (no lora_A tensors, another peft_type).
var ErrAdapter = errors.New("bad lora adapter")

// The fused products of a layer of the native decoder an adapter adds to.
const (
	loraQKV = iota
	loraO
	loraGateUp
	loraDown
	loraProducts
)

// Adapter is a LoRA adapter loaded for one base Model, unmerged. It is
// immutable and safe for concurrent use.
type Adapter struct {
	base   *Model
	dir    string
	rank   int
	bytes  int64
	layers [][loraProducts]*loraProduct // nil where the adapter targets nothing
}

// loraProduct is an adapter's part of one fused product: the lora_A of the
// modules it targets stacked [Σr, in], and for each module scale·lora_B
// [out, r] with where its rows go in the product's output; bias is the
// change to the product's bias (the adapter's minus the base's), nil when
// the adapter trains none.
type loraProduct struct {
	a     *packedMatrix
	outs  []loraOut
	bias  []float32
	width int // the product's output width
}

type loraOut struct {
	b      *packedMatrix // scale·lora_B [out, r]
	off    int           // the module's first row in the product's output
	rankAt int           // its first column of x·A_stackedᵀ
}

// Dir is the directory the adapter was loaded from.
func (a *Adapter) Dir() string { return a.dir }

// Rank is the largest rank of the adapter's modules.
func (a *Adapter) Rank() int { return a.rank }

// Bytes is the memory the adapter's weights take.
func (a *Adapter) Bytes() int64 { return a.bytes }

// loraTarget is where a module's output goes in the fused products.
type loraTarget struct {
	product, off, out, in int
}

// loraPlace is a targeted weight's layer and place in the fused products.
type loraPlace struct {
	layer int
	loraTarget
}

// loraTargets maps each checkpoint weight an adapter may target (each
// layer's projection matrices, by name) to its layer and place in the
// fused products.
func loraTargets(c checkpoint.Config) map[string]loraPlace {
	e, inter := c.HiddenSize, c.IntermediateSize
	qd, kvd := c.NumHeads*c.HeadDim, c.NumKVHeads*c.HeadDim
	place := map[string]loraTarget{
		"q_proj": {loraQKV, 0, qd, e}, "k_proj": {loraQKV, qd, kvd, e}, "v_proj": {loraQKV, qd + kvd, kvd, e},
		"o_proj": {loraO, 0, e, qd}, "gate_proj": {loraGateUp, 0, inter, e}, "up_proj": {loraGateUp, inter, inter, e},
		"down_proj": {loraDown, 0, e, inter},
	}
	out := map[string]loraPlace{}
	for _, w := range checkpoint.Layout(c) {
		if t, ok := place[w.Module]; ok && w.Layer >= 0 && !w.Bias {
			out[w.Name] = loraPlace{w.Layer, t}
		}
	}
	return out
}

// peftAdapterConfig is what an adapter_config.json says that loading needs.
type peftAdapterConfig struct {
	R         int     `json:"r"`
	LoraAlpha float64 `json:"lora_alpha"`
	PEFTType  string  `json:"peft_type"`
	UseRSLoRA bool    `json:"use_rslora"`
}

// LoadAdapter loads the PEFT LoRA adapter in dir (adapter_config.json and
// adapter_model.safetensors) for m, unmerged. It checks everything before
// it returns: every tensor must adapt a weight of m's layout with m's
// shapes (hidden size, layer names), each lora_A its lora_B, and the rank
// be at most schemas.MaxLoraRank (the trainer's limit); an error wraps
// ErrAdapter and names the file and the tensor. m must run the native
// engine.
func (m *Model) LoadAdapter(dir string) (*Adapter, error) {
	if m.native == nil || m.engine != EngineNative {
		return nil, fmt.Errorf("%w: adapter %s: unmerged adapters need the native engine, the model runs %s", ErrAdapter, dir, m.engine)
	}
	cfgPath := filepath.Join(dir, AdapterConfigFile)
	data, err := os.ReadFile(cfgPath)
	if err != nil {
		return nil, fmt.Errorf("%w: adapter: %w", ErrAdapter, err)
	}
	var pc peftAdapterConfig
	if err := json.Unmarshal(data, &pc); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrAdapter, cfgPath, err)
	}
	if pc.R > schemas.MaxLoraRank {
		return nil, fmt.Errorf("%w: %w", ErrAdapter, schemas.ConfigLimitError("lora.r", pc.R, schemas.MaxLoraRank, cfgPath))
	}
	if pc.R < 1 || (pc.PEFTType != "" && pc.PEFTType != "LORA") || pc.UseRSLoRA {
		return nil, fmt.Errorf("%w: %s: r %d, peft_type %q, use_rslora %v (want a LORA adapter of r >= 1 without rslora)", ErrAdapter, cfgPath, pc.R, pc.PEFTType, pc.UseRSLoRA)
	}
	wPath := filepath.Join(dir, AdapterWeightsFile)
	ts, _, err := checkpoint.ReadSafetensors(wPath)
	if err != nil {
		return nil, fmt.Errorf("%w: adapter: %w", ErrAdapter, err)
	}
	a, err := m.newAdapter(ts, float32(pc.LoraAlpha/float64(pc.R)), wPath)
	if err != nil {
		return nil, err
	}
	a.dir = dir
	return a, nil
}

// newAdapter builds an Adapter of m from PEFT-named tensors, lora_B scaled
// by scale; file names the tensors' file in errors.
func (m *Model) newAdapter(ts map[string]*checkpoint.Tensor, scale float32, file string) (*Adapter, error) {
	c := m.cfg
	bad := func(name, format string, args ...any) error {
		return fmt.Errorf("%w: %s: tensor %s: %s", ErrAdapter, file, name, fmt.Sprintf(format, args...))
	}
	targets := loraTargets(c)
	type module struct {
		t    loraTarget
		a, b *checkpoint.Tensor
	}
	byLayer := make([][loraProducts][]module, c.NumLayers)
	type bias struct {
		off  int
		data []float32
	}
	biases := make([][loraProducts][]bias, c.NumLayers)
	names := make([]string, 0, len(ts))
	for n := range ts {
		names = append(names, n)
	}
	sort.Strings(names) // the first bad tensor named is the same every time
	rank, found := 0, false
	for _, name := range names {
		t := ts[name]
		rest, ok := strings.CutPrefix(name, "base_model.model.")
		if !ok {
			return nil, bad(name, "not a PEFT name (base_model.model.<weight>)")
		}
		switch {
		case strings.HasSuffix(rest, ".lora_B.weight"):
			aName := strings.TrimSuffix(name, ".lora_B.weight") + ".lora_A.weight"
			if ts[aName] == nil {
				return nil, bad(name, "no %s beside it", aName)
			}
			continue // taken with its lora_A
		case strings.HasSuffix(rest, ".lora_A.weight"):
		case strings.HasSuffix(rest, ".bias"):
			w, ok := targets[strings.TrimSuffix(rest, ".bias")+".weight"]
			if !ok || (w.product == loraQKV && !c.HasQKVBias()) || (w.product == loraO && !c.HasOBias()) || w.product > loraO {
				return nil, bad(name, "the base model has no bias %s", rest)
			}
			if len(t.Shape) != 1 || t.Shape[0] != w.out || len(t.Data) != w.out {
				return nil, bad(name, "shape %v, the base's %s is [%d]", t.Shape, rest, w.out)
			}
			biases[w.layer][w.product] = append(biases[w.layer][w.product], bias{w.off, t.Data})
			continue
		default:
			return nil, bad(name, "neither a lora_A, a lora_B nor a bias (only those load unmerged)")
		}
		base := strings.TrimSuffix(rest, ".lora_A.weight") + ".weight"
		w, ok := targets[base]
		if !ok {
			return nil, bad(name, "the base model (%d layers, hidden size %d) has no projection %s", c.NumLayers, c.HiddenSize, base)
		}
		bName := strings.TrimSuffix(name, ".lora_A.weight") + ".lora_B.weight"
		b := ts[bName]
		if b == nil {
			return nil, bad(name, "no %s beside it", bName)
		}
		if len(t.Shape) != 2 || t.Shape[0] > schemas.MaxLoraRank {
			r := 0
			if len(t.Shape) > 0 {
				r = t.Shape[0]
			}
			return nil, fmt.Errorf("%w: %s: tensor %s: %w", ErrAdapter, file, name, schemas.ConfigLimitError("lora.r", r, schemas.MaxLoraRank, file))
		}
		r := t.Shape[0]
		if r < 1 || t.Shape[1] != w.in || len(t.Data) != r*w.in {
			return nil, bad(name, "shape %v, want [r, %d]: %s takes %d inputs (hidden size %d)", t.Shape, w.in, base, w.in, c.HiddenSize)
		}
		if len(b.Shape) != 2 || b.Shape[0] != w.out || b.Shape[1] != r || len(b.Data) != w.out*r {
			return nil, bad(bName, "shape %v, want [%d, %d]: %s gives %d outputs and lora_A has rank %d", b.Shape, w.out, r, base, w.out, r)
		}
		rank, found = max(rank, r), true
		byLayer[w.layer][w.product] = append(byLayer[w.layer][w.product], module{w.loraTarget, t, b})
	}
	if !found {
		return nil, fmt.Errorf("%w: %s: no lora_A tensors", ErrAdapter, file)
	}
	ad := &Adapter{base: m, rank: rank, layers: make([][loraProducts]*loraProduct, c.NumLayers)}
	widths := m.native.productWidths()
	for l := range byLayer {
		for p, mods := range byLayer[l] {
			if len(mods) == 0 && len(biases[l][p]) == 0 {
				continue
			}
			lp := &loraProduct{width: widths[p]}
			var stacked []float32
			sum := 0
			for _, md := range mods {
				stacked = append(stacked, md.a.Data...)
				r := md.a.Shape[0]
				scaled := slices.Clone(md.b.Data)
				for i := range scaled {
					scaled[i] *= scale
				}
				lp.outs = append(lp.outs, loraOut{b: packMatrix(scaled, md.t.out, r), off: md.t.off, rankAt: sum})
				ad.bytes += 4 * int64(len(scaled))
				sum += r
			}
			if sum > 0 {
				lp.a = packMatrix(stacked, sum, mods[0].t.in)
				ad.bytes += 4 * int64(len(stacked))
			}
			if bs := biases[l][p]; len(bs) > 0 {
				baseBias := m.native.productBias(l, p)
				lp.bias = slices.Clone(baseBias) // the modules whose bias the adapter leaves keep the base's
				for _, b := range bs {
					copy(lp.bias[b.off:], b.data)
				}
				for i := range lp.bias {
					lp.bias[i] -= baseBias[i] // the adapter's bias replaces the base's
				}
				ad.bytes += 4 * int64(len(lp.bias))
			}
			ad.layers[l][p] = lp
		}
	}
	return ad, nil
}

// productWidths are the output widths of a layer's fused products.
func (d *nativeDecoder) productWidths() [loraProducts]int {
	c := d.cfg
	qd, kvd := c.NumHeads*c.HeadDim, c.NumKVHeads*c.HeadDim
	return [loraProducts]int{qd + 2*kvd, c.HiddenSize, 2 * c.IntermediateSize, c.HiddenSize}
}

// productBias is the base's bias of layer l's product p (zeros when absent).
func (d *nativeDecoder) productBias(l, p int) []float32 {
	var b []float32
	switch p {
	case loraQKV:
		b = d.layers[l].qkvBias
	case loraO:
		b = d.layers[l].oBias
	}
	if b == nil {
		return make([]float32, d.productWidths()[p])
	}
	return b
}

// checkAdapter refuses an adapter loaded for another model.
func (m *Model) checkAdapter(a *Adapter) error {
	if a != nil && a.base != m {
		return fmt.Errorf("%w: adapter %s was loaded for another model", ErrInvalidRequest, a.dir)
	}
	return nil
}

// setAdapter makes slot's rows run with adapter a (nil: the base alone).
// Only the native engine holds adapters; another refuses one in
// validateRequest already.
func setAdapter(st decodeState, slot int, a *Adapter) {
	s, ok := st.(*nativeState)
	if !ok {
		return
	}
	if s.adapters == nil {
		if a == nil {
			return
		}
		s.adapters = make([]*Adapter, s.b)
	}
	s.adapters[slot] = a
}

// loraAdd adds to y [n, width] (the product p of layer l for the items,
// from x [n, in]) each adapted row's adapter term: its rows gathered by
// adapter, x·Aᵀ·(scale·B)ᵀ and the bias change, scattered back; w is the
// part's scratch space.
func (s *nativeState) loraAdd(w, l, p int, y, x []float32, items []nativeItem) {
	if s.adapters == nil {
		return
	}
	var groups map[*Adapter][]int // item rows by adapter
	for i, it := range items {
		if a := s.adapters[it.slot]; a != nil && a.layers[l][p] != nil {
			if groups == nil {
				groups = map[*Adapter][]int{}
			}
			groups[a] = append(groups[a], i)
		}
	}
	if groups == nil {
		return
	}
	for len(s.loraScratch) <= w {
		s.loraScratch = append(s.loraScratch, nil)
	}
	for a, rows := range groups {
		lp := a.layers[l][p]
		k, width := len(rows), lp.width
		in := len(x) / len(items)
		sum := 0
		if lp.a != nil {
			sum = lp.a.out
		}
		need := k * (in + sum + width)
		if cap(s.loraScratch[w]) < need {
			s.loraScratch[w] = make([]float32, need)
		}
		buf := s.loraScratch[w][:need]
		xs, t, ys := buf[:k*in], buf[k*in:k*(in+sum)], buf[k*(in+sum):]
		clear(ys)
		if lp.a != nil {
			for j, r := range rows {
				copy(xs[j*in:(j+1)*in], x[r*in:(r+1)*in])
			}
			lp.a.mulOn(t, xs, k, nil, false)
			for _, o := range lp.outs {
				o.b.mulStrided(ys[o.off:], width, t[o.rankAt:], sum, k, false, false)
			}
		}
		for j, r := range rows {
			dst, src := y[r*width:(r+1)*width], ys[j*width:(j+1)*width]
			addTo(dst, src)
			if lp.bias != nil {
				addTo(dst, lp.bias)
			}
		}
	}
}

// WithAdapter is a view of b whose requests run with the adapter resolve
// returns (called for each request without one: an adapter unloaded
// meanwhile is loaded again), in b's batch beside the requests of b and of
// its other views. The view is not Run: b's loop serves it.
func (b *Batcher) WithAdapter(resolve func(context.Context) (*Adapter, error)) *Batcher {
	return &Batcher{m: b.m, slots: b.slots, log: b.log, in: b.in, done: b.done, adapter: resolve}
}

// adapted sets req's adapter on a view of a Batcher.
func (b *Batcher) adapted(ctx context.Context, req GenerateRequest) (GenerateRequest, error) {
	if b.adapter == nil || req.Adapter != nil {
		return req, nil
	}
	a, err := b.adapter(ctx)
	if err != nil {
		return req, fmt.Errorf("adapter: %w", err)
	}
	req.Adapter = a
	return req, nil
}

// Score scores the requests on the adapter's base with the adapter
// (ScoreAdapted).
func (a *Adapter) Score(ctx context.Context, reqs []ScoreRequest) ([]ScoreResult, error) {
	return a.base.ScoreAdapted(ctx, a, reqs)
}
