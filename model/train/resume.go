package train

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/gomlx/gomlx/pkg/core/tensors"

	"github.com/largeforge/largeforge/model/checkpoint"
)

// Resume loads a checkpoint-<step>/ directory written by this trainer: the
// weights (the adapter under LoRA), the optimizer state and the step and log history of
// trainer_state.json. Train then continues at the next step with the same
// schedule position and data order.
func (t *Trainer) Resume(dir string) error {
	var st trainerState
	data, err := os.ReadFile(filepath.Join(dir, TrainerStateFile))
	if err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	if err := json.Unmarshal(data, &st); err != nil {
		return fmt.Errorf("resume: %s: %w", TrainerStateFile, err)
	}
	var weights map[string]*checkpoint.Tensor
	if t.lora != nil {
		weights, _, err = checkpoint.ReadSafetensors(filepath.Join(dir, AdapterWeightsFile))
	} else {
		var ck *checkpoint.Checkpoint
		if ck, err = checkpoint.Load(dir); err == nil {
			weights = ck.Tensors
		}
	}
	if err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	opt, meta, err := checkpoint.ReadSafetensors(filepath.Join(dir, OptimizerFile))
	if err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	if got := meta["optimizer"]; got != t.optim.label {
		return fmt.Errorf("%w: resume %s: its optimizer state is %s's, the run's optim is %s", ErrInvalidOption, dir, got, t.cfg.Optim)
	}
	params := make([]*tensors.Tensor, len(t.names))
	mom := make([]*tensors.Tensor, len(t.names))
	vel := make([]*tensors.Tensor, len(t.names))
	for i, n := range t.names {
		k1, k2 := t.optim.stateKey1+n, t.optim.stateKey2+n
		for _, x := range []struct {
			dst  **tensors.Tensor
			src  *checkpoint.Tensor
			key  string
			want []int
		}{
			{&params[i], weights[n], n, t.params[i].Shape().Dimensions},
			{&mom[i], opt[k1], k1, t.mom[i].Shape().Dimensions},
			{&vel[i], opt[k2], k2, t.vel[i].Shape().Dimensions},
		} {
			if x.src == nil || !slices.Equal(x.src.Shape, x.want) {
				return fmt.Errorf("resume %s: tensor %s is missing or has the wrong shape", dir, x.key)
			}
			*x.dst = tensors.FromFlatDataAndDimensions(x.src.Data, x.want...)
		}
	}
	for _, ts := range [][]*tensors.Tensor{t.params, t.mom, t.vel} {
		for _, x := range ts {
			_ = x.FinalizeAll()
		}
	}
	t.params, t.mom, t.vel = params, mom, vel
	t.step = st.GlobalStep
	t.history = st.LogHistory
	t.log.Info().Str("checkpoint", dir).Int("global_step", t.step).Msg("resumed")
	return nil
}
