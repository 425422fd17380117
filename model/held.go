package model

import (
	"slices"

	"github.com/gomlx/gomlx/pkg/core/tensors"

	"github.com/largeforge/largeforge/model/checkpoint"
)

// held is the decoder as the Model holds it, for both engines: the weights
// of checkpoint.Decoder with each layer's projections fused (Fused). The
// separate Q, K, V, Gate and Up and the q, k and v biases are not held.
type held[T any] struct {
	dec   *checkpoint.Decoder[T]
	fused []Fused[T]
}

// fields points at every weight h holds, absent biases included (zero), in
// one fixed order: the order of the graphs' weight parameters. A tied head
// is not listed (it is the embedding).
func (h *held[T]) fields(cfg checkpoint.Config) []*T {
	out := []*T{&h.dec.Embed}
	for l := range h.dec.Layers {
		lw, f := &h.dec.Layers[l], &h.fused[l]
		out = append(out, &lw.AttnNorm, &f.QKV, &f.QKVBias, &lw.O, &lw.OBias, &lw.MLPNorm, &f.GateUp, &lw.Down)
	}
	out = append(out, &h.dec.FinalNorm)
	if !cfg.TieWordEmbeddings {
		out = append(out, &h.dec.LMHead)
	}
	return out
}

// mapHeld converts every weight of src with f, in fields order; absent
// (zero) weights stay absent and a tied head stays the embedding.
func mapHeld[A comparable, B any](cfg checkpoint.Config, src *held[A], f func(A) B) *held[B] {
	dst := &held[B]{dec: checkpoint.NewDecoder[B](cfg), fused: make([]Fused[B], cfg.NumLayers)}
	out := dst.fields(cfg)
	var absent A
	for i, p := range src.fields(cfg) {
		if *p != absent {
			*out[i] = f(*p)
		}
	}
	if cfg.TieWordEmbeddings {
		dst.dec.LMHead = dst.dec.Embed
	}
	return dst
}

// heldTensors lists the weights h holds, in fields order.
func heldTensors(cfg checkpoint.Config, h *held[*tensors.Tensor]) []*tensors.Tensor {
	var out []*tensors.Tensor
	for _, p := range h.fields(cfg) {
		if *p != nil {
			out = append(out, *p)
		}
	}
	return out
}

// fuse copies the weights the Model holds out of a bound checkpoint,
// stacking each layer's q, k and v (and their biases), and gate and up, by
// rows.
func fuse(cfg checkpoint.Config, d *checkpoint.Decoder[*checkpoint.Tensor]) *held[*checkpoint.Tensor] {
	h := &held[*checkpoint.Tensor]{dec: checkpoint.NewDecoder[*checkpoint.Tensor](cfg), fused: make([]Fused[*checkpoint.Tensor], cfg.NumLayers)}
	h.dec.Embed, h.dec.FinalNorm = stackRows(d.Embed), stackRows(d.FinalNorm)
	h.dec.LMHead = h.dec.Embed
	if !cfg.TieWordEmbeddings {
		h.dec.LMHead = stackRows(d.LMHead)
	}
	for l, lw := range d.Layers {
		h.dec.Layers[l] = checkpoint.Layer[*checkpoint.Tensor]{
			AttnNorm: stackRows(lw.AttnNorm), O: stackRows(lw.O), OBias: stackRows(lw.OBias),
			MLPNorm: stackRows(lw.MLPNorm), Down: stackRows(lw.Down),
		}
		h.fused[l] = Fused[*checkpoint.Tensor]{
			QKV:     stackRows(lw.Q, lw.K, lw.V),
			QKVBias: stackRows(lw.QBias, lw.KBias, lw.VBias),
			GateUp:  stackRows(lw.Gate, lw.Up),
		}
	}
	return h
}

// stackRows is a new tensor of the parts' rows one after another (a copy of
// a single part); nil when the first part is nil (an absent bias).
func stackRows(parts ...*checkpoint.Tensor) *checkpoint.Tensor {
	if parts[0] == nil {
		return nil
	}
	shape := slices.Clone(parts[0].Shape)
	shape[0] = 0
	n := 0
	for _, p := range parts {
		n += len(p.Data)
	}
	data := make([]float32, 0, n)
	for _, p := range parts {
		shape[0] += p.Shape[0]
		data = append(data, p.Data...)
	}
	qs := make([]*checkpoint.QuantTensor, len(parts))
	for i, p := range parts {
		qs[i] = p.Quant
	}
	return &checkpoint.Tensor{Shape: shape, Data: data, Quant: checkpoint.StackQuantRows(qs...)}
}
