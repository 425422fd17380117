package train

import (
	"fmt"
	"math"
	"path/filepath"
	"strings"

	"github.com/largeforge/largeforge/internal/atomicfile"
)

// ModelCardFile is an adapter's model card (§4.2).
const ModelCardFile = "README.md"

// modelCard is the adapter's README.md: its base model, the data it was
// trained on, its LoRA settings and the run's latest metrics (the final
// ones in output_dir).
func (t *Trainer) modelCard() string {
	var b strings.Builder
	base := filepath.Base(t.cfg.ModelName)
	fmt.Fprintf(&b, "---\nbase_model: %s\nlibrary_name: peft\ntags:\n- lora\n- largeforge\n---\n\n", yamlString(t.cfg.ModelName))
	fmt.Fprintf(&b, "# LoRA adapter for %s\n\n", base)
	fmt.Fprintf(&b, "A LoRA adapter (PEFT format: adapter_config.json, adapter_model.safetensors) trained by LargeForge.\n\n")
	fmt.Fprintf(&b, "- Base model: %s\n", t.cfg.ModelName)
	data := t.opts.dataset
	if data == "" {
		data = "(not recorded)"
	}
	fmt.Fprintf(&b, "- Dataset: %s\n", data)
	fmt.Fprintf(&b, "- Steps: %d\n\n", t.step)
	l := t.lora.cfg
	b.WriteString("## LoRA settings\n\n| setting | value |\n| --- | --- |\n")
	fmt.Fprintf(&b, "| r | %d |\n| lora_alpha | %d |\n| lora_dropout | %g |\n| target_modules | %s |\n| bias | %s |\n| task_type | %s |\n\n",
		l.R, l.LoraAlpha, l.LoraDropout, strings.Join(l.TargetModules, ", "), l.Bias, l.TaskType)
	b.WriteString("## Training\n\n| setting | value |\n| --- | --- |\n")
	fmt.Fprintf(&b, "| num_epochs | %d |\n| per_device_batch_size | %d |\n| gradient_accumulation_steps | %d |\n| learning_rate | %g |\n| optim | %s |\n| lr_scheduler_type | %s |\n\n",
		t.cfg.NumEpochs, t.cfg.PerDeviceBatchSize, t.cfg.GradientAccumulationSteps, t.cfg.LearningRate, t.cfg.Optim, t.cfg.LRSchedulerType)
	b.WriteString("## Metrics\n\n")
	m := t.latestMetrics()
	if len(m) == 0 {
		b.WriteString("No metrics recorded yet.\n")
		return b.String()
	}
	b.WriteString("| metric | value |\n| --- | --- |\n")
	for _, k := range []string{"train_loss", "loss", "eval_loss", "perplexity", "accuracy", "train_samples_per_second"} {
		if v, ok := m[k]; ok {
			fmt.Fprintf(&b, "| %s | %.6g |\n", k, v)
		}
	}
	return b.String()
}

// latestMetrics is the newest value of each metric in log_history.
func (t *Trainer) latestMetrics() map[string]float64 {
	out := map[string]float64{}
	for _, h := range t.history {
		for k, v := range h {
			if f, ok := v.(float64); ok && !math.IsNaN(f) {
				out[k] = f
			}
		}
	}
	return out
}

func yamlString(s string) string {
	return "\"" + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + "\""
}

// writeModelCard writes the adapter's README.md into dir.
func (t *Trainer) writeModelCard(dir string) error {
	return atomicfile.WriteBytes(filepath.Join(dir, ModelCardFile), []byte(t.modelCard()))
}
