package train

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/largeforge/largeforge/model/checkpoint"
	"github.com/largeforge/largeforge/schemas"
)

// LoadMerged loads baseDir's checkpoint with the LoRA adapter in adapterDir
// merged into it in memory (see ApplyAdapter): what an inference worker
// serves for a base plus adapter, without writing a merged copy.
func LoadMerged(baseDir, adapterDir string) (*checkpoint.Checkpoint, error) {
	ck, err := checkpoint.Load(baseDir)
	if err != nil {
		return nil, fmt.Errorf("load merged: %w", err)
	}
	if err := ApplyAdapter(ck, adapterDir); err != nil {
		return nil, err
	}
	return ck, nil
}

// ApplyAdapter merges the LoRA adapter in adapterDir (adapter_config.json
// and adapter_model.safetensors, PEFT names) into ck's weights, W +
// lora_alpha/r * B·A, computed once; the adapted tensors are replaced, not
// written through. It is the in-memory half of MergeAdapter. An r over
// schemas.MaxLoraRank (the limit the trainer applies) is refused before the
// weights are read.
func ApplyAdapter(ck *checkpoint.Checkpoint, adapterDir string) error {
	data, err := os.ReadFile(filepath.Join(adapterDir, AdapterConfigFile))
	if err != nil {
		return fmt.Errorf("apply adapter: %w", err)
	}
	var pc struct {
		R         int     `json:"r"`
		LoraAlpha float64 `json:"lora_alpha"`
		PEFTType  string  `json:"peft_type"`
	}
	if err := json.Unmarshal(data, &pc); err != nil {
		return fmt.Errorf("apply adapter: %s: %w", AdapterConfigFile, err)
	}
	if pc.R > schemas.MaxLoraRank { // the trainer's limit: one constant for both
		return fmt.Errorf("%w: apply adapter %s: %w", ErrInvalidOption, adapterDir, schemas.ConfigLimitError("lora.r", pc.R, schemas.MaxLoraRank, AdapterConfigFile))
	}
	if pc.R < 1 || (pc.PEFTType != "" && pc.PEFTType != "LORA") {
		return fmt.Errorf("%w: apply adapter: r %d, peft_type %q", ErrInvalidOption, pc.R, pc.PEFTType)
	}
	ad, _, err := checkpoint.ReadSafetensors(filepath.Join(adapterDir, AdapterWeightsFile))
	if err != nil {
		return fmt.Errorf("apply adapter: %w", err)
	}
	st := &loraState{scale: pc.LoraAlpha / float64(pc.R)}
	for name, ma := range ad {
		rest, ok := strings.CutPrefix(name, "base_model.model.")
		if !ok || !strings.HasSuffix(rest, ".lora_A.weight") {
			continue
		}
		base := strings.TrimSuffix(rest, ".lora_A.weight") + ".weight"
		a := adapter{base: base, a: name, b: PEFTName(base, "B")}
		w, mb := ck.Tensors[base], ad[a.b]
		if w == nil || mb == nil || len(w.Shape) != 2 || len(ma.Shape) != 2 || len(mb.Shape) != 2 ||
			ma.Shape[1] != w.Shape[1] || mb.Shape[0] != w.Shape[0] || ma.Shape[0] != mb.Shape[1] {
			return fmt.Errorf("%w: apply adapter: %s does not fit the base model", ErrInvalidOption, name)
		}
		st.adapters = append(st.adapters, a)
	}
	if len(st.adapters) == 0 {
		return fmt.Errorf("%w: apply adapter: no lora_A tensors in %s", ErrInvalidOption, adapterDir)
	}
	// Biases trained beside the adapters (bias all or lora_only) replace the base's.
	for name, b := range ad {
		rest, ok := strings.CutPrefix(name, "base_model.model.")
		if !ok || !strings.HasSuffix(rest, ".bias") || strings.Contains(rest, ".lora_") {
			continue
		}
		if w := ck.Tensors[rest]; w == nil || !slices.Equal(w.Shape, b.Shape) {
			return fmt.Errorf("%w: apply adapter: %s does not fit the base model", ErrInvalidOption, name)
		}
		ck.Tensors[rest] = &checkpoint.Tensor{Shape: slices.Clone(b.Shape), Data: slices.Clone(b.Data)}
	}
	st.merge(ck.Tensors, ad)
	return nil
}
