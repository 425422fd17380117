package train

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"

	"github.com/largeforge/largeforge/model"
	"github.com/largeforge/largeforge/model/checkpoint"
	"github.com/largeforge/largeforge/schemas"
)

// LoRA adapter files (§4.2): the names model loads unmerged adapters from.
const (
	AdapterConfigFile  = model.AdapterConfigFile
	AdapterWeightsFile = model.AdapterWeightsFile
)

type adapter struct {
	base string // the adapted weight's checkpoint name
	a, b string // PEFT names of lora_A [r, in] and lora_B [out, r]
	in   int    // the adapted weight's input size (0 when not known)
}

type loraState struct {
	cfg      schemas.LoraConfig
	scale    float64
	adapters []adapter
	biases   []loraBias // biases trained beside the adapters (bias all or lora_only)
}

// loraBias is a bias trained under LoRA, saved in the adapter under its PEFT
// name (base_model.model.model.layers.N.self_attn.q_proj.bias).
type loraBias struct {
	base, peft string
}

// dropout reports whether lora_dropout applies in training.
func (s *loraState) dropout() bool { return s.cfg.LoraDropout > 0 }

// trainsBias reports whether the checkpoint tensor name is a bias that
// trains: every bias with bias "all", those of adapted modules with
// "lora_only", none with "none".
func (s *loraState) trainsBias(name string) bool {
	if !strings.HasSuffix(name, ".bias") {
		return false
	}
	switch s.cfg.Bias {
	case schemas.LoraBiasAll:
		return true
	case schemas.LoraBiasLoraOnly:
		w := strings.TrimSuffix(name, ".bias") + ".weight"
		for _, a := range s.adapters {
			if a.base == w {
				return true
			}
		}
	}
	return false
}

// PEFTName is the PEFT tensor name of a LoRA matrix ("A" or "B") for a
// checkpoint weight: base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight.
func PEFTName(base, which string) string {
	return "base_model.model." + strings.TrimSuffix(base, ".weight") + ".lora_" + which + ".weight"
}

// newLoRA lists the adapters and initialises them as PEFT does: A uniform in
// ±1/sqrt(in) (kaiming_uniform with a=sqrt(5)), B zero.
func newLoRA(c checkpoint.Config, lc schemas.LoraConfig, seed int64) (*loraState, map[string]*checkpoint.Tensor, error) {
	// The weights an adapter may target: each layer's projection matrices.
	type target struct {
		layer  int
		module string
	}
	targets := map[target]checkpoint.Weight{}
	for _, w := range checkpoint.Layout(c) {
		if w.Layer >= 0 && !w.Bias && len(w.Shape) == 2 {
			targets[target{w.Layer, w.Module}] = w
		}
	}
	st := &loraState{cfg: lc, scale: float64(lc.LoraAlpha) / float64(lc.R)}
	init := map[string]*checkpoint.Tensor{}
	rng := rand.New(rand.NewPCG(uint64(seed), 0x10ca))
	for l := range c.NumLayers {
		for _, m := range lc.TargetModules {
			w, ok := targets[target{l, m}]
			if !ok {
				return nil, nil, fmt.Errorf("%w: lora target module %q (want q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj or down_proj)", ErrInvalidOption, m)
			}
			base := w.Name
			out, in := w.Shape[0], w.Shape[1]
			ad := adapter{base: base, a: PEFTName(base, "A"), b: PEFTName(base, "B"), in: in}
			a := &checkpoint.Tensor{Shape: []int{lc.R, in}, Data: make([]float32, lc.R*in)}
			bound := 1 / math.Sqrt(float64(in))
			for i := range a.Data {
				a.Data[i] = float32((rng.Float64()*2 - 1) * bound)
			}
			init[ad.a] = a
			init[ad.b] = &checkpoint.Tensor{Shape: []int{out, lc.R}, Data: make([]float32, out*lc.R)}
			st.adapters = append(st.adapters, ad)
		}
	}
	return st, init, nil
}

// merge adds scale * B·A into each adapted weight of base (in place on copies).
func (s *loraState) merge(base, ad map[string]*checkpoint.Tensor) {
	for _, a := range s.adapters {
		w, ma, mb := base[a.base], ad[a.a], ad[a.b]
		out, in, r := w.Shape[0], w.Shape[1], ma.Shape[0]
		merged := append([]float32(nil), w.Data...)
		for o := range out {
			for k := range r {
				bk := float64(mb.Data[o*r+k]) * s.scale
				if bk == 0 {
					continue
				}
				row := ma.Data[k*in : (k+1)*in]
				for i, av := range row {
					merged[o*in+i] += float32(bk * float64(av))
				}
			}
		}
		base[a.base] = &checkpoint.Tensor{Shape: w.Shape, Data: merged}
	}
}

// peftConfig is adapter_config.json in PEFT's shape.
func (s *loraState) peftConfig(baseModel string) map[string]any {
	return map[string]any{
		"base_model_name_or_path": baseModel, "peft_type": "LORA", "task_type": s.cfg.TaskType,
		"r": s.cfg.R, "lora_alpha": s.cfg.LoraAlpha, "lora_dropout": s.cfg.LoraDropout,
		"target_modules": s.cfg.TargetModules, "bias": s.cfg.Bias, "inference_mode": true,
		"fan_in_fan_out": false, "modules_to_save": nil,
	}
}

// saveAdapter writes adapter_model.safetensors and adapter_config.json into dir.
func (t *Trainer) saveAdapter(dir string) error {
	ad, err := t.trainable()
	if err != nil {
		return err
	}
	if err := t.checkFiniteTensors(ad); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("save adapter: %w", err)
	}
	if err := checkpoint.WriteSafetensors(filepath.Join(dir, AdapterWeightsFile), ad, map[string]string{"format": "pt"}); err != nil {
		return err
	}
	return writeJSON(filepath.Join(dir, AdapterConfigFile), t.lora.peftConfig(t.cfg.ModelName))
}

// MergeAdapter writes baseDir's model with the LoRA adapter in adapterDir
// (adapter_config.json and adapter_model.safetensors, PEFT names) merged
// in, W + lora_alpha/r * B·A, as a full checkpoint in outDir, tokenizer
// files included.
func MergeAdapter(baseDir, adapterDir, outDir string) error {
	ck, err := LoadMerged(baseDir, adapterDir)
	if err != nil {
		return fmt.Errorf("merge adapter: %w", err)
	}
	if err := checkpoint.Save(outDir, ck); err != nil {
		return fmt.Errorf("merge adapter: %w", err)
	}
	if _, err := checkpoint.CopyTokenizer(baseDir, outDir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("merge adapter: %w", err)
	}
	return nil
}
