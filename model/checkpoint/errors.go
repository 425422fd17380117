package checkpoint

import "errors"

// Sentinel errors. Every error returned by this package wraps one of these
// with the file (and, where it applies, the tensor) it concerns; match them
// with errors.Is.
var (
	// ErrUnknownArchitecture: config.json (or a GGUF file) names an
	// architecture this package does not load.
	ErrUnknownArchitecture = errors.New("unknown architecture")
	// ErrInvalidConfig: a config value is missing, out of range or
	// inconsistent with another one.
	ErrInvalidConfig = errors.New("invalid model config")
	// ErrMissingTensor: a tensor the architecture needs is absent.
	ErrMissingTensor = errors.New("missing tensor")
	// ErrShape: a tensor has the wrong shape, or its data does not match it.
	ErrShape = errors.New("wrong tensor shape")
	// ErrDType: a tensor is stored in a dtype this package does not read.
	ErrDType = errors.New("unsupported dtype")
	// ErrTruncated: a file ends before the data its header describes.
	ErrTruncated = errors.New("truncated file")
	// ErrBadHeader: a safetensors or GGUF header is malformed.
	ErrBadHeader = errors.New("malformed header")
	// ErrNoWeights: a checkpoint directory has neither model.safetensors nor
	// model.safetensors.index.json.
	ErrNoWeights = errors.New("no weights file")
	// ErrUnsupported: the input uses a feature this package does not
	// implement (a GGUF tokenizer other than llama SPM, rope_freqs tensors).
	ErrUnsupported = errors.New("unsupported feature")
	// ErrUnknownPreset: Init was given a preset name not in Presets().
	ErrUnknownPreset = errors.New("unknown preset")
)
