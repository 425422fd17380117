package train

import (
	"fmt"
	"math"
)

// LearningRate returns the learning rate of optimizer step step (0-based)
// out of total steps, with warmup steps of linear warmup, for the Hugging
// Face schedule kinds "linear", "cosine", "constant" and
// "constant_with_warmup". Any other kind is an error.
func LearningRate(kind string, base float64, step, warmup, total int) (float64, error) {
	switch kind {
	case "constant":
		return base, nil
	case "constant_with_warmup", "linear", "cosine":
	default:
		return 0, fmt.Errorf("%w: lr_scheduler_type %q is not supported by this trainer (linear, cosine, constant, constant_with_warmup)", ErrInvalidOption, kind)
	}
	if step < warmup {
		return base * float64(step) / float64(max(1, warmup)), nil
	}
	switch kind {
	case "linear":
		return base * math.Max(0, float64(total-step)/float64(max(1, total-warmup))), nil
	case "cosine":
		progress := float64(step-warmup) / float64(max(1, total-warmup))
		return base * math.Max(0, 0.5*(1+math.Cos(math.Pi*progress))), nil
	}
	return base, nil // constant_with_warmup
}

// WarmupSteps is ceil(ratio * total), as the Hugging Face Trainer computes it.
func WarmupSteps(ratio float64, total int) int {
	return int(math.Ceil(ratio * float64(total)))
}
