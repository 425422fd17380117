package checkpoint

import (
	"fmt"
	"strconv"
)

// Decoder is the Llama-family decoder's weights, typed: the one definition
// of the architecture that the native engine, the graph engine and the
// trainer bind to. T is what an engine holds for a tensor: a *Tensor read
// from a checkpoint, a graph node, a float32 slice. Layout names each field
// (its Hugging Face and llama.cpp names) and gives its shape under a config;
// nothing else builds tensor names.
type Decoder[T any] struct {
	Embed     T // [vocab, hidden]
	Layers    []Layer[T]
	FinalNorm T // [hidden]
	LMHead    T // [vocab, hidden]; Embed itself when the config ties them
}

// Layer is one decoder layer's weights; projections are [out, in]. The
// biases are the zero T when the config has none: q, k and v biases come
// with attention_bias (always for Qwen2), the o bias with attention_bias
// except for Qwen2.
type Layer[T any] struct {
	AttnNorm     T // [hidden]
	Q            T // [heads*headDim, hidden]
	K, V         T // [kvHeads*headDim, hidden]
	O            T // [hidden, heads*headDim]
	QBias        T // [heads*headDim]
	KBias, VBias T // [kvHeads*headDim]
	OBias        T // [hidden]
	MLPNorm      T // [hidden]
	Gate, Up     T // [inter, hidden]
	Down         T // [hidden, inter]
}

// Weight describes one tensor of the decoder.
type Weight struct {
	Name   string // Hugging Face name: model.layers.3.self_attn.q_proj.weight
	GGUF   string // llama.cpp name: blk.3.attn_q.weight
	Module string // the module, as LoRA target_modules name it: q_proj, input_layernorm, embed_tokens, ...
	Layer  int    // the layer's index; -1 outside the layers
	Bias   bool   // a bias (not a weight matrix or a norm)
	Shape  []int  // from the config
}

// slot is a Weight and the field of a Decoder that holds it.
type slot[T any] struct {
	Weight
	field *T
}

// HasQKVBias reports whether the decoder of c has q, k and v biases.
func (c Config) HasQKVBias() bool { return c.AttentionBias || c.Architecture == ArchQwen2 }

// HasOBias reports whether the decoder of c has an o_proj bias.
func (c Config) HasOBias() bool { return c.HasQKVBias() && c.Architecture != ArchQwen2 }

// NewDecoder returns a Decoder of c's layer count with every field zero.
func NewDecoder[T any](c Config) *Decoder[T] {
	return &Decoder[T]{Layers: make([]Layer[T], c.NumLayers)}
}

// slots lists d's tensors under c in a fixed order: the embedding, each
// layer (attention norm, q, k, v, o, their biases, MLP norm, gate, up,
// down), the final norm, then the head unless c ties it. d has c's layer
// count (NewDecoder).
func (d *Decoder[T]) slots(c Config) []slot[T] {
	h, inter := c.HiddenSize, c.IntermediateSize
	qd, kvd := c.NumHeads*c.HeadDim, c.NumKVHeads*c.HeadDim
	top := func(name, gguf, module string, field *T, shape ...int) slot[T] {
		return slot[T]{Weight{Name: name, GGUF: gguf, Module: module, Layer: -1, Shape: shape}, field}
	}
	out := []slot[T]{top("model.embed_tokens.weight", "token_embd.weight", "embed_tokens", &d.Embed, c.VocabSize, h)}
	for l := range d.Layers {
		lw := &d.Layers[l]
		n := strconv.Itoa(l)
		// add appends the tensor of module (under group, llama.cpp's gguf) of kind weight or bias.
		add := func(group, module, gguf, kind string, field *T, shape ...int) {
			path := module
			if group != "" {
				path = group + "." + module
			}
			out = append(out, slot[T]{Weight{
				Name: "model.layers." + n + "." + path + "." + kind, GGUF: "blk." + n + "." + gguf + "." + kind,
				Module: module, Layer: l, Bias: kind == "bias", Shape: shape,
			}, field})
		}
		add("", "input_layernorm", "attn_norm", "weight", &lw.AttnNorm, h)
		add("self_attn", "q_proj", "attn_q", "weight", &lw.Q, qd, h)
		add("self_attn", "k_proj", "attn_k", "weight", &lw.K, kvd, h)
		add("self_attn", "v_proj", "attn_v", "weight", &lw.V, kvd, h)
		add("self_attn", "o_proj", "attn_output", "weight", &lw.O, h, qd)
		if c.HasQKVBias() {
			add("self_attn", "q_proj", "attn_q", "bias", &lw.QBias, qd)
			add("self_attn", "k_proj", "attn_k", "bias", &lw.KBias, kvd)
			add("self_attn", "v_proj", "attn_v", "bias", &lw.VBias, kvd)
		}
		if c.HasOBias() {
			add("self_attn", "o_proj", "attn_output", "bias", &lw.OBias, h)
		}
		add("", "post_attention_layernorm", "ffn_norm", "weight", &lw.MLPNorm, h)
		add("mlp", "gate_proj", "ffn_gate", "weight", &lw.Gate, inter, h)
		add("mlp", "up_proj", "ffn_up", "weight", &lw.Up, inter, h)
		add("mlp", "down_proj", "ffn_down", "weight", &lw.Down, h, inter)
	}
	out = append(out, top("model.norm.weight", "output_norm.weight", "norm", &d.FinalNorm, h))
	if !c.TieWordEmbeddings {
		out = append(out, top("lm_head.weight", "output.weight", "lm_head", &d.LMHead, c.VocabSize, h))
	}
	return out
}

// Layout lists every tensor a decoder of config c has, in a fixed order
// (see Decoder). A tied head is not listed: it is the embedding.
func Layout(c Config) []Weight {
	slots := NewDecoder[struct{}](c).slots(c)
	out := make([]Weight, len(slots))
	for i, s := range slots {
		out[i] = s.Weight
	}
	return out
}

// Bind builds the Decoder of config c from get's value for each tensor of
// Layout(c), in that order, and ties the head to the embedding when c ties
// them. get returns an error (ErrMissingTensor, ErrShape, ...) for a tensor
// it lacks or holds in another shape; Bind returns it wrapped with the
// tensor's name.
func Bind[T any](c Config, get func(w Weight) (T, error)) (*Decoder[T], error) {
	d := NewDecoder[T](c)
	for _, s := range d.slots(c) {
		v, err := get(s.Weight)
		if err != nil {
			return nil, fmt.Errorf("tensor %q: %w", s.Name, err)
		}
		*s.field = v
	}
	if c.TieWordEmbeddings {
		d.LMHead = d.Embed
	}
	return d, nil
}

// BindTensors binds the decoder of config c to checkpoint tensors by name:
// each must be present (ErrMissingTensor) with the config's shape and as
// many values (ErrShape). Tensors the decoder does not use are ignored.
func BindTensors(c Config, tensors map[string]*Tensor) (*Decoder[*Tensor], error) {
	return Bind(c, func(w Weight) (*Tensor, error) {
		t := tensors[w.Name]
		if t == nil {
			return nil, ErrMissingTensor
		}
		if !equalShape(t.Shape, w.Shape) {
			return nil, fmt.Errorf("%w: got %v, want %v", ErrShape, t.Shape, w.Shape)
		}
		if len(t.Data) != t.NumElements() {
			return nil, fmt.Errorf("%w: shape %v but %d values", ErrShape, t.Shape, len(t.Data))
		}
		return t, nil
	})
}
