// Package loratest writes PEFT LoRA adapters (§4.2) of random weights for
// a base model's config, for the tests and benchmarks of unmerged adapters:
// an adapter that changes every targeted product, made in milliseconds
// where training one takes seconds.
package loratest

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"

	"github.com/largeforge/largeforge/model"
	"github.com/largeforge/largeforge/model/checkpoint"
)

// Spec is an adapter to write.
type Spec struct {
	R       int      // rank
	Alpha   float64  // lora_alpha
	Modules []string // target_modules (q_proj, ..., down_proj)
	Seed    uint64
	Scale   float64 // the spread of A and B's values (default 0.5)
}

// Write writes an adapter for base config c into dir: lora_A and lora_B of
// every layer's targeted modules, uniform in ±Scale, and adapter_config.json.
func Write(c checkpoint.Config, dir string, s Spec) error {
	if s.Scale == 0 {
		s.Scale = 0.5
	}
	rng := rand.New(rand.NewPCG(s.Seed, 0x10a))
	random := func(shape ...int) *checkpoint.Tensor {
		t := &checkpoint.Tensor{Shape: shape, Data: make([]float32, shape[0]*shape[1])}
		for i := range t.Data {
			t.Data[i] = float32((rng.Float64()*2 - 1) * s.Scale)
		}
		return t
	}
	ts := map[string]*checkpoint.Tensor{}
	for _, w := range checkpoint.Layout(c) {
		if w.Layer < 0 || w.Bias || !slices.Contains(s.Modules, w.Module) {
			continue
		}
		stem := "base_model.model." + w.Name[:len(w.Name)-len(".weight")]
		ts[stem+".lora_A.weight"] = random(s.R, w.Shape[1])
		ts[stem+".lora_B.weight"] = random(w.Shape[0], s.R)
	}
	if len(ts) == 0 {
		return fmt.Errorf("loratest: no weight of modules %v", s.Modules)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := checkpoint.WriteSafetensors(filepath.Join(dir, model.AdapterWeightsFile), ts, map[string]string{"format": "pt"}); err != nil {
		return err
	}
	cfg, err := json.Marshal(map[string]any{"peft_type": "LORA", "r": s.R, "lora_alpha": s.Alpha, "target_modules": s.Modules, "bias": "none"})
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, model.AdapterConfigFile), cfg, 0o644)
}
