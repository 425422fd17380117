package checkpoint

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// TestBindTensors binds the decoder to checkpoint tensors: every field is
// filled from its tensor, a tied head is the embedding, and a missing tensor
// or a wrong shape is an error naming the tensor.
func TestBindTensors(t *testing.T) {
	tied := smallConfig()
	tied.TieWordEmbeddings = true
	qwen := smallConfig()
	qwen.Architecture = ArchQwen2
	tests := []struct {
		name    string
		cfg     Config
		mutate  func(ts map[string]*Tensor)
		wantErr error
		tensor  string // named in the error
	}{
		{name: "llama", cfg: smallConfig()},
		{name: "tied head", cfg: tied},
		{name: "qwen2 biases", cfg: qwen},
		{name: "extra tensor ignored", cfg: smallConfig(), mutate: func(ts map[string]*Tensor) {
			ts["model.layers.0.self_attn.rotary_emb.inv_freq"] = &Tensor{Shape: []int{2}, Data: make([]float32, 2)}
		}},
		{
			name: "missing tensor", cfg: smallConfig(), wantErr: ErrMissingTensor, tensor: "model.layers.1.mlp.up_proj.weight",
			mutate: func(ts map[string]*Tensor) { delete(ts, "model.layers.1.mlp.up_proj.weight") },
		},
		{
			name: "missing head", cfg: smallConfig(), wantErr: ErrMissingTensor, tensor: "lm_head.weight",
			mutate: func(ts map[string]*Tensor) { delete(ts, "lm_head.weight") },
		},
		{
			name: "missing qwen2 bias", cfg: qwen, wantErr: ErrMissingTensor, tensor: "model.layers.0.self_attn.k_proj.bias",
			mutate: func(ts map[string]*Tensor) { delete(ts, "model.layers.0.self_attn.k_proj.bias") },
		},
		{
			name: "wrong shape", cfg: smallConfig(), wantErr: ErrShape, tensor: "model.layers.0.self_attn.k_proj.weight",
			mutate: func(ts map[string]*Tensor) {
				ts["model.layers.0.self_attn.k_proj.weight"] = &Tensor{Shape: []int{16, 8}, Data: make([]float32, 128)}
			},
		},
		{
			name: "data shorter than shape", cfg: smallConfig(), wantErr: ErrShape, tensor: "model.norm.weight",
			mutate: func(ts map[string]*Tensor) {
				ts["model.norm.weight"] = &Tensor{Shape: []int{16}, Data: make([]float32, 15)}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts, err := InitTensors(tt.cfg, 1)
			if err != nil {
				t.Fatal(err)
			}
			if tt.mutate != nil {
				tt.mutate(ts)
			}
			d, err := BindTensors(tt.cfg, ts)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), `"`+tt.tensor+`"`) {
					t.Fatalf("err %v, want %v naming %s", err, tt.wantErr, tt.tensor)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(d.Layers) != tt.cfg.NumLayers {
				t.Fatalf("%d layers, want %d", len(d.Layers), tt.cfg.NumLayers)
			}
			if d.Embed != ts["model.embed_tokens.weight"] || d.FinalNorm != ts["model.norm.weight"] {
				t.Error("embedding or final norm not bound to its tensor")
			}
			if tt.cfg.TieWordEmbeddings != (d.LMHead == d.Embed) {
				t.Errorf("head tied %v, config ties %v", d.LMHead == d.Embed, tt.cfg.TieWordEmbeddings)
			}
			l1 := d.Layers[1]
			if l1.Q != ts["model.layers.1.self_attn.q_proj.weight"] || l1.Down != ts["model.layers.1.mlp.down_proj.weight"] ||
				l1.MLPNorm != ts["model.layers.1.post_attention_layernorm.weight"] {
				t.Error("layer 1 not bound to its tensors")
			}
			if got, want := l1.QBias != nil, tt.cfg.HasQKVBias(); got != want {
				t.Errorf("q bias bound %v, want %v", got, want)
			}
			if l1.OBias != nil {
				t.Error("o bias bound without attention_bias (or for Qwen2)")
			}
		})
	}
}

// TestLayout: the names are unique in both namings and the order is fixed
// (embedding first, final norm then head last).
func TestLayout(t *testing.T) {
	c := smallConfig()
	c.AttentionBias = true
	ws := Layout(c)
	if len(ws) != 3+2*13 {
		t.Fatalf("%d weights, want %d", len(ws), 3+2*13)
	}
	hf, gguf := map[string]bool{}, map[string]bool{}
	for _, w := range ws {
		if hf[w.Name] || gguf[w.GGUF] {
			t.Errorf("%s (%s) listed twice", w.Name, w.GGUF)
		}
		hf[w.Name], gguf[w.GGUF] = true, true
		if w.Bias != strings.HasSuffix(w.Name, ".bias") || (w.Layer >= 0) != strings.HasPrefix(w.GGUF, "blk.") {
			t.Errorf("%+v: Bias or Layer disagrees with the names", w)
		}
	}
	names := []string{ws[0].Name, ws[1].Name, ws[len(ws)-2].Name, ws[len(ws)-1].Name}
	want := []string{"model.embed_tokens.weight", "model.layers.0.input_layernorm.weight", "model.norm.weight", "lm_head.weight"}
	if !slices.Equal(names, want) {
		t.Errorf("order %v, want %v", names, want)
	}
	if w := ws[2]; w.Name != "model.layers.0.self_attn.q_proj.weight" || w.GGUF != "blk.0.attn_q.weight" || w.Module != "q_proj" || !slices.Equal(w.Shape, []int{16, 16}) {
		t.Errorf("q_proj of layer 0: %+v", w)
	}
}
