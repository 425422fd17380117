package checkpoint

import (
	"fmt"
	"path/filepath"
	"slices"
)

// Checks that a quantized directory's stated configuration and its tensors
// agree: quant_config.json and config.json's quantization_config say the
// same bits and group size, and every module's scales hold the groups that
// group size makes (one scale per output channel only where
// per_channel_fallback lists the module, or where the group covers the
// whole row). A field read and then not held to would be ignored.

// checkQuantConfigs refuses a config.json quantization_config that
// contradicts quant_config.json (both present), naming both files.
func checkQuantConfigs(dir string, qc QuantConfig, gq *gptqConfig) error {
	if gq == nil {
		return nil
	}
	cfgPath, qcPath := filepath.Join(dir, ConfigFile), filepath.Join(dir, QuantConfigFile)
	switch {
	case gq.Bits != qc.Bits:
		return fmt.Errorf("%s: quantization_config: %w: bits %d, but %s says %d", cfgPath, ErrQuant, gq.Bits, qcPath, qc.Bits)
	case gq.GroupSize != qc.GroupSize:
		return fmt.Errorf("%s: quantization_config: %w: group_size %d, but %s says %d", cfgPath, ErrQuant, gq.GroupSize, qcPath, qc.GroupSize)
	case gq.DescAct:
		return fmt.Errorf("%s: quantization_config: %w: desc_act (act-order) is not supported", cfgPath, ErrUnsupported)
	case gq.Sym != nil && !*gq.Sym:
		return fmt.Errorf("%s: quantization_config: %w: sym false (asymmetric) is not supported", cfgPath, ErrUnsupported)
	}
	return nil
}

// groupsWanted is the scale group length the directory declares for
// module's rows of cols (declared names the file that declares it): the
// group size, or the whole row where the group covers it or where
// per_channel_fallback lists the module; a group size that does not divide
// the row with no fallback listed is refused, naming path's scales tensor.
// Weights imported from GGUF mix block sizes by tensor type, so a "gguf"
// directory's group_size is only the most common one: 0, not checked. A
// directory made elsewhere (no quant_config.json) states its groups in
// config.json instead (gptqConfig.dynamicGroup).
func groupsWanted(qc QuantConfig, declared, path, module string, cols int) (int, error) {
	gs := qc.GroupSize
	switch {
	case qc.Method == QuantMethodGGUF:
		return 0, nil
	case gs <= 0 || gs >= cols:
		return cols, nil
	case cols%gs == 0:
		return gs, nil
	case slices.Contains(qc.PerChannel, module):
		return cols, nil
	}
	return 0, fmt.Errorf("%s: tensor %q: %w: group size %d does not divide its rows of %d and %s lists no per-channel fallback for %s",
		path, module+".scales", ErrQuant, gs, cols, declared, module)
}

// checkQuantGroups holds module's unpacked scales (q) to the group length
// groupsWanted gave (want; 0: not checked).
func checkQuantGroups(qc QuantConfig, declared, path, module string, q *QuantTensor, want int) error {
	if want == 0 || q.GroupSize == want {
		return nil
	}
	return fmt.Errorf("%s: tensor %q: %w: %d groups of %d per row, but %s (group size %d%s) makes %d",
		path, module+".scales", ErrQuant, q.Groups(), q.GroupSize, declared, qc.GroupSize, fallbackNote(qc, module), (q.Cols+want-1)/want)
}

// fallbackNote says when module is listed as a per-channel fallback.
func fallbackNote(qc QuantConfig, module string) string {
	if slices.Contains(qc.PerChannel, module) {
		return ", per-channel fallback"
	}
	return ""
}

// checkLMHeadFlag holds quantization_config's lm_head (GPTQModel's flag:
// lm_head is quantized) to the weights read from path: lm_head.qweight
// present exactly when it is true. Absent, either loads.
func checkLMHeadFlag(cfgPath, path string, gq *gptqConfig, raw map[string]qRaw) error {
	if gq == nil || gq.LMHead == nil {
		return nil
	}
	if _, has := raw["lm_head.qweight"]; has != *gq.LMHead {
		return fmt.Errorf("%s: quantization_config: %w: lm_head %t, but %s %s tensor \"lm_head.qweight\"", cfgPath, ErrQuant, *gq.LMHead, path, map[bool]string{true: "has", false: "has no"}[has])
	}
	return nil
}
