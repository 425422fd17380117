package checkpoint

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Architecture names accepted in config.json "architectures".
const (
	ArchLlama   = "LlamaForCausalLM"
	ArchMistral = "MistralForCausalLM"
	ArchQwen2   = "Qwen2ForCausalLM"
)

// File names of the Hugging Face layout.
const (
	ConfigFile           = "config.json"
	GenerationConfigFile = "generation_config.json"
	WeightsFile          = "model.safetensors"
	WeightsIndexFile     = "model.safetensors.index.json"
	TokenizerFile        = "tokenizer.json"
	TokenizerConfigFile  = "tokenizer_config.json"
	SpecialTokensMapFile = "special_tokens_map.json"
)

var modelTypes = map[string]string{
	ArchLlama:   "llama",
	ArchMistral: "mistral",
	ArchQwen2:   "qwen2",
}

// Defaults applied when config.json leaves a field out (the Hugging Face
// LlamaConfig defaults).
const (
	DefaultRopeTheta  = 10000.0
	DefaultRMSNormEps = 1e-6
	DefaultMaxPos     = 2048
)

// RopeScaling is the llama3-style "rope_scaling" block of config.json.
// The older key "type" is accepted in place of "rope_type".
type RopeScaling struct {
	Type                          string  `json:"rope_type"`
	Factor                        float64 `json:"factor"`
	LowFreqFactor                 float64 `json:"low_freq_factor"`
	HighFreqFactor                float64 `json:"high_freq_factor"`
	OriginalMaxPositionEmbeddings int     `json:"original_max_position_embeddings"`
}

// UnmarshalJSON accepts both "rope_type" and the legacy "type" key.
func (r *RopeScaling) UnmarshalJSON(b []byte) error {
	var raw struct {
		RopeType                      string  `json:"rope_type"`
		Type                          string  `json:"type"`
		Factor                        float64 `json:"factor"`
		LowFreqFactor                 float64 `json:"low_freq_factor"`
		HighFreqFactor                float64 `json:"high_freq_factor"`
		OriginalMaxPositionEmbeddings int     `json:"original_max_position_embeddings"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	*r = RopeScaling{
		Type:                          raw.RopeType,
		Factor:                        raw.Factor,
		LowFreqFactor:                 raw.LowFreqFactor,
		HighFreqFactor:                raw.HighFreqFactor,
		OriginalMaxPositionEmbeddings: raw.OriginalMaxPositionEmbeddings,
	}
	if r.Type == "" {
		r.Type = raw.Type
	}
	return nil
}

// Config is the part of a Hugging Face config.json that a Llama-family
// decoder needs. LoadConfig fills defaults (HeadDim = HiddenSize/NumHeads,
// NumKVHeads = NumHeads, RopeTheta 10000, ...), so a loaded Config is
// complete. For Qwen2 AttentionBias is always true (Qwen2 has q/k/v biases
// and no o_proj bias); for Llama and Mistral it means q/k/v/o biases.
type Config struct {
	Architecture          string // "LlamaForCausalLM" | "MistralForCausalLM" | "Qwen2ForCausalLM"
	ModelType             string // "llama" | "mistral" | "qwen2"
	VocabSize             int
	HiddenSize            int
	IntermediateSize      int
	NumLayers             int
	NumHeads              int
	NumKVHeads            int
	HeadDim               int
	MaxPositionEmbeddings int
	RMSNormEps            float64
	RopeTheta             float64
	RopeScaling           *RopeScaling
	TieWordEmbeddings     bool
	AttentionBias         bool
	BOSTokenID            int
	EOSTokenIDs           []int // eos_token_id may be an int or a list in config.json
	TorchDtype            string
	SlidingWindow         int // Mistral/Qwen2 sliding window, 0 when absent or disabled
}

// Validate checks sizes and cross-field rules: positive sizes, heads divide
// the hidden size (unless head_dim is explicit), KV heads divide heads, a
// known architecture, a supported rope_scaling.
func (c Config) Validate() error {
	if _, ok := modelTypes[c.Architecture]; !ok {
		return fmt.Errorf("%w: %q (want %s, %s or %s)", ErrUnknownArchitecture, c.Architecture, ArchLlama, ArchMistral, ArchQwen2)
	}
	pos := []struct {
		name string
		v    int
	}{
		{"vocab_size", c.VocabSize},
		{"hidden_size", c.HiddenSize},
		{"intermediate_size", c.IntermediateSize},
		{"num_hidden_layers", c.NumLayers},
		{"num_attention_heads", c.NumHeads},
		{"num_key_value_heads", c.NumKVHeads},
		{"head_dim", c.HeadDim},
		{"max_position_embeddings", c.MaxPositionEmbeddings},
	}
	for _, p := range pos {
		if p.v <= 0 {
			return fmt.Errorf("%w: %s must be positive, got %d", ErrInvalidConfig, p.name, p.v)
		}
	}
	if c.NumHeads%c.NumKVHeads != 0 {
		return fmt.Errorf("%w: num_attention_heads %d is not a multiple of num_key_value_heads %d", ErrInvalidConfig, c.NumHeads, c.NumKVHeads)
	}
	if c.HeadDim%2 != 0 {
		return fmt.Errorf("%w: head_dim %d must be even for RoPE", ErrInvalidConfig, c.HeadDim)
	}
	if !(c.RMSNormEps > 0) {
		return fmt.Errorf("%w: rms_norm_eps must be positive, got %g", ErrInvalidConfig, c.RMSNormEps)
	}
	if !(c.RopeTheta > 0) {
		return fmt.Errorf("%w: rope_theta must be positive, got %g", ErrInvalidConfig, c.RopeTheta)
	}
	if c.BOSTokenID < 0 || c.BOSTokenID >= c.VocabSize {
		return fmt.Errorf("%w: bos_token_id %d outside vocabulary of %d", ErrInvalidConfig, c.BOSTokenID, c.VocabSize)
	}
	for _, id := range c.EOSTokenIDs {
		if id < 0 || id >= c.VocabSize {
			return fmt.Errorf("%w: eos_token_id %d outside vocabulary of %d", ErrInvalidConfig, id, c.VocabSize)
		}
	}
	if c.SlidingWindow < 0 {
		return fmt.Errorf("%w: sliding_window must not be negative, got %d", ErrInvalidConfig, c.SlidingWindow)
	}
	if rs := c.RopeScaling; rs != nil {
		switch rs.Type {
		case "llama3":
			if !(rs.Factor > 0) || !(rs.LowFreqFactor > 0) || !(rs.HighFreqFactor > rs.LowFreqFactor) || rs.OriginalMaxPositionEmbeddings <= 0 {
				return fmt.Errorf("%w: llama3 rope_scaling needs factor > 0, 0 < low_freq_factor < high_freq_factor and original_max_position_embeddings > 0, got %+v", ErrInvalidConfig, *rs)
			}
		case "default", "":
		default:
			return fmt.Errorf("%w: rope_scaling type %q (only llama3 is implemented)", ErrUnsupported, rs.Type)
		}
	}
	return nil
}

// hfConfig mirrors config.json; pointers tell absent from zero.
type hfConfig struct {
	Architectures         []string        `json:"architectures"`
	ModelType             string          `json:"model_type"`
	VocabSize             *int            `json:"vocab_size"`
	HiddenSize            *int            `json:"hidden_size"`
	IntermediateSize      *int            `json:"intermediate_size"`
	NumHiddenLayers       *int            `json:"num_hidden_layers"`
	NumAttentionHeads     *int            `json:"num_attention_heads"`
	NumKeyValueHeads      *int            `json:"num_key_value_heads"`
	HeadDim               *int            `json:"head_dim"`
	HiddenAct             string          `json:"hidden_act"`
	MaxPositionEmbeddings *int            `json:"max_position_embeddings"`
	RMSNormEps            *float64        `json:"rms_norm_eps"`
	RopeTheta             *float64        `json:"rope_theta"`
	RopeScaling           *RopeScaling    `json:"rope_scaling"`
	AttentionBias         *bool           `json:"attention_bias"`
	MLPBias               *bool           `json:"mlp_bias"`
	TieWordEmbeddings     *bool           `json:"tie_word_embeddings"`
	BOSTokenID            *int            `json:"bos_token_id"`
	EOSTokenID            json.RawMessage `json:"eos_token_id"`
	TorchDtype            string          `json:"torch_dtype"`
	DType                 string          `json:"dtype"` // transformers >= 4.56 name of torch_dtype
	RopeParameters        *ropeParameters `json:"rope_parameters"`
	SlidingWindow         *int            `json:"sliding_window"`
	UseSlidingWindow      *bool           `json:"use_sliding_window"`
}

// ropeParameters is the transformers v5 form of rope_theta + rope_scaling.
type ropeParameters struct {
	RopeTheta *float64 `json:"rope_theta"`
	RopeScaling
}

func (r *ropeParameters) UnmarshalJSON(b []byte) error {
	var theta struct {
		RopeTheta *float64 `json:"rope_theta"`
	}
	if err := json.Unmarshal(b, &theta); err != nil {
		return err
	}
	r.RopeTheta = theta.RopeTheta
	return r.RopeScaling.UnmarshalJSON(b)
}

// parseIDs decodes an int, a list of ints or null.
func parseIDs(raw json.RawMessage) ([]int, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var one int
	if err := json.Unmarshal(raw, &one); err == nil {
		return []int{one}, nil
	}
	var many []int
	if err := json.Unmarshal(raw, &many); err != nil {
		return nil, fmt.Errorf("token id must be an int or a list of ints, got %s", raw)
	}
	return many, nil
}

// ParseConfig decodes the bytes of a config.json, fills defaults and validates.
func ParseConfig(data []byte) (Config, error) {
	var h hfConfig
	if err := json.Unmarshal(data, &h); err != nil {
		return Config{}, fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	}
	var c Config
	switch len(h.Architectures) {
	case 0:
		return Config{}, fmt.Errorf("%w: no \"architectures\" entry", ErrUnknownArchitecture)
	case 1:
		c.Architecture = h.Architectures[0]
	default:
		return Config{}, fmt.Errorf("%w: several architectures %q", ErrUnknownArchitecture, h.Architectures)
	}
	want, ok := modelTypes[c.Architecture]
	if !ok {
		return Config{}, fmt.Errorf("%w: %q (want %s, %s or %s)", ErrUnknownArchitecture, c.Architecture, ArchLlama, ArchMistral, ArchQwen2)
	}
	c.ModelType = h.ModelType
	if c.ModelType == "" {
		c.ModelType = want
	}
	if h.HiddenAct != "" && h.HiddenAct != "silu" {
		return Config{}, fmt.Errorf("%w: hidden_act %q (only silu)", ErrUnsupported, h.HiddenAct)
	}
	if h.MLPBias != nil && *h.MLPBias {
		return Config{}, fmt.Errorf("%w: mlp_bias true", ErrUnsupported)
	}
	need := []struct {
		name string
		src  *int
		dst  *int
	}{
		{"vocab_size", h.VocabSize, &c.VocabSize},
		{"hidden_size", h.HiddenSize, &c.HiddenSize},
		{"intermediate_size", h.IntermediateSize, &c.IntermediateSize},
		{"num_hidden_layers", h.NumHiddenLayers, &c.NumLayers},
		{"num_attention_heads", h.NumAttentionHeads, &c.NumHeads},
	}
	for _, n := range need {
		if n.src == nil {
			return Config{}, fmt.Errorf("%w: %s is missing", ErrInvalidConfig, n.name)
		}
		*n.dst = *n.src
	}
	c.NumKVHeads = c.NumHeads
	if h.NumKeyValueHeads != nil {
		c.NumKVHeads = *h.NumKeyValueHeads
	}
	if h.HeadDim != nil {
		c.HeadDim = *h.HeadDim
	} else {
		if c.NumHeads <= 0 || c.HiddenSize%c.NumHeads != 0 {
			return Config{}, fmt.Errorf("%w: head_dim absent and hidden_size %d is not a multiple of num_attention_heads %d", ErrInvalidConfig, c.HiddenSize, c.NumHeads)
		}
		c.HeadDim = c.HiddenSize / c.NumHeads
	}
	c.MaxPositionEmbeddings = DefaultMaxPos
	if h.MaxPositionEmbeddings != nil {
		c.MaxPositionEmbeddings = *h.MaxPositionEmbeddings
	}
	c.RMSNormEps = DefaultRMSNormEps
	if h.RMSNormEps != nil {
		c.RMSNormEps = *h.RMSNormEps
	}
	c.RopeTheta = DefaultRopeTheta
	if h.RopeTheta != nil {
		c.RopeTheta = *h.RopeTheta
	}
	c.RopeScaling = h.RopeScaling
	if rp := h.RopeParameters; rp != nil {
		if h.RopeTheta == nil && rp.RopeTheta != nil {
			c.RopeTheta = *rp.RopeTheta
		}
		if c.RopeScaling == nil {
			rs := rp.RopeScaling
			c.RopeScaling = &rs
		}
	}
	if c.RopeScaling != nil && (c.RopeScaling.Type == "default" || c.RopeScaling.Type == "") {
		c.RopeScaling = nil
	}
	if h.TieWordEmbeddings != nil {
		c.TieWordEmbeddings = *h.TieWordEmbeddings
	}
	if h.AttentionBias != nil {
		c.AttentionBias = *h.AttentionBias
	}
	if c.Architecture == ArchQwen2 {
		c.AttentionBias = true
	}
	if h.BOSTokenID != nil {
		c.BOSTokenID = *h.BOSTokenID
	}
	eos, err := parseIDs(h.EOSTokenID)
	if err != nil {
		return Config{}, fmt.Errorf("%w: eos_token_id: %v", ErrInvalidConfig, err)
	}
	c.EOSTokenIDs = eos
	c.TorchDtype = h.TorchDtype
	if c.TorchDtype == "" {
		c.TorchDtype = h.DType
	}
	if h.SlidingWindow != nil && (h.UseSlidingWindow == nil || *h.UseSlidingWindow) && c.Architecture != ArchLlama {
		c.SlidingWindow = *h.SlidingWindow
	}
	if c.Architecture == ArchQwen2 && h.UseSlidingWindow == nil {
		c.SlidingWindow = 0 // Qwen2 defaults use_sliding_window to false
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// LoadConfig reads and validates dir/config.json.
func LoadConfig(dir string) (Config, error) {
	path := filepath.Join(dir, ConfigFile)
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read config %s: %w", path, err)
	}
	c, err := ParseConfig(data)
	if err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// MarshalJSON writes the config in Hugging Face config.json form.
func (c Config) MarshalJSON() ([]byte, error) {
	type out struct {
		Architectures         []string     `json:"architectures"`
		ModelType             string       `json:"model_type"`
		VocabSize             int          `json:"vocab_size"`
		HiddenSize            int          `json:"hidden_size"`
		IntermediateSize      int          `json:"intermediate_size"`
		NumHiddenLayers       int          `json:"num_hidden_layers"`
		NumAttentionHeads     int          `json:"num_attention_heads"`
		NumKeyValueHeads      int          `json:"num_key_value_heads"`
		HeadDim               int          `json:"head_dim"`
		HiddenAct             string       `json:"hidden_act"`
		MaxPositionEmbeddings int          `json:"max_position_embeddings"`
		RMSNormEps            float64      `json:"rms_norm_eps"`
		RopeTheta             float64      `json:"rope_theta"`
		RopeScaling           *RopeScaling `json:"rope_scaling"`
		AttentionBias         bool         `json:"attention_bias"`
		MLPBias               bool         `json:"mlp_bias"`
		TieWordEmbeddings     bool         `json:"tie_word_embeddings"`
		SlidingWindow         *int         `json:"sliding_window,omitempty"`
		UseSlidingWindow      *bool        `json:"use_sliding_window,omitempty"`
		BOSTokenID            int          `json:"bos_token_id"`
		EOSTokenID            any          `json:"eos_token_id"`
		TorchDtype            string       `json:"torch_dtype"`
	}
	o := out{
		Architectures:         []string{c.Architecture},
		ModelType:             c.ModelType,
		VocabSize:             c.VocabSize,
		HiddenSize:            c.HiddenSize,
		IntermediateSize:      c.IntermediateSize,
		NumHiddenLayers:       c.NumLayers,
		NumAttentionHeads:     c.NumHeads,
		NumKeyValueHeads:      c.NumKVHeads,
		HeadDim:               c.HeadDim,
		HiddenAct:             "silu",
		MaxPositionEmbeddings: c.MaxPositionEmbeddings,
		RMSNormEps:            c.RMSNormEps,
		RopeTheta:             c.RopeTheta,
		RopeScaling:           c.RopeScaling,
		AttentionBias:         c.AttentionBias,
		TieWordEmbeddings:     c.TieWordEmbeddings,
		BOSTokenID:            c.BOSTokenID,
		EOSTokenID:            idsJSON(c.EOSTokenIDs),
		TorchDtype:            c.TorchDtype,
	}
	if o.ModelType == "" {
		o.ModelType = modelTypes[c.Architecture]
	}
	if o.TorchDtype == "" {
		o.TorchDtype = "float32"
	}
	if c.Architecture == ArchQwen2 {
		o.AttentionBias = false // implicit in Qwen2; the key is not part of its config
		use := c.SlidingWindow > 0
		o.UseSlidingWindow = &use
	}
	if c.SlidingWindow > 0 {
		sw := c.SlidingWindow
		o.SlidingWindow = &sw
	}
	return json.Marshal(o)
}

// idsJSON writes one id as an int, several as a list, none as null.
func idsJSON(ids []int) any {
	switch len(ids) {
	case 0:
		return nil
	case 1:
		return ids[0]
	default:
		return ids
	}
}

// GenerationConfig holds generation_config.json defaults. A zero field means
// the file does not set it (callers apply their own defaults); an absent
// file gives the zero value.
type GenerationConfig struct {
	BOSTokenID   int
	EOSTokenIDs  []int
	PadTokenID   *int
	Temperature  float64
	TopP         float64
	TopK         int
	MaxNewTokens int
	MaxLength    int
	DoSample     bool
}

type hfGeneration struct {
	BOSTokenID   *int            `json:"bos_token_id,omitempty"`
	EOSTokenID   json.RawMessage `json:"eos_token_id,omitempty"`
	PadTokenID   *int            `json:"pad_token_id,omitempty"`
	Temperature  float64         `json:"temperature,omitempty"`
	TopP         float64         `json:"top_p,omitempty"`
	TopK         int             `json:"top_k,omitempty"`
	MaxNewTokens int             `json:"max_new_tokens,omitempty"`
	MaxLength    int             `json:"max_length,omitempty"`
	DoSample     bool            `json:"do_sample"`
}

// ParseGenerationConfig decodes the bytes of a generation_config.json.
func ParseGenerationConfig(data []byte) (GenerationConfig, error) {
	var h hfGeneration
	if err := json.Unmarshal(data, &h); err != nil {
		return GenerationConfig{}, fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	}
	g := GenerationConfig{
		PadTokenID:   h.PadTokenID,
		Temperature:  h.Temperature,
		TopP:         h.TopP,
		TopK:         h.TopK,
		MaxNewTokens: h.MaxNewTokens,
		MaxLength:    h.MaxLength,
		DoSample:     h.DoSample,
	}
	if h.BOSTokenID != nil {
		g.BOSTokenID = *h.BOSTokenID
	}
	eos, err := parseIDs(h.EOSTokenID)
	if err != nil {
		return GenerationConfig{}, fmt.Errorf("%w: eos_token_id: %v", ErrInvalidConfig, err)
	}
	g.EOSTokenIDs = eos
	if g.Temperature < 0 || g.TopP < 0 || g.TopP > 1 || g.TopK < 0 || g.MaxNewTokens < 0 || g.MaxLength < 0 {
		return GenerationConfig{}, fmt.Errorf("%w: out-of-range value in %+v", ErrInvalidConfig, g)
	}
	return g, nil
}

// LoadGenerationConfig reads dir/generation_config.json; an absent file
// gives the zero value and no error.
func LoadGenerationConfig(dir string) (GenerationConfig, error) {
	path := filepath.Join(dir, GenerationConfigFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return GenerationConfig{}, nil
	}
	if err != nil {
		return GenerationConfig{}, fmt.Errorf("read generation config %s: %w", path, err)
	}
	g, err := ParseGenerationConfig(data)
	if err != nil {
		return GenerationConfig{}, fmt.Errorf("generation config %s: %w", path, err)
	}
	return g, nil
}

// MarshalJSON writes the generation config in Hugging Face form.
func (g GenerationConfig) MarshalJSON() ([]byte, error) {
	bos := g.BOSTokenID
	h := hfGeneration{
		BOSTokenID:   &bos,
		PadTokenID:   g.PadTokenID,
		Temperature:  g.Temperature,
		TopP:         g.TopP,
		TopK:         g.TopK,
		MaxNewTokens: g.MaxNewTokens,
		MaxLength:    g.MaxLength,
		DoSample:     g.DoSample,
	}
	if len(g.EOSTokenIDs) > 0 {
		b, err := json.Marshal(idsJSON(g.EOSTokenIDs))
		if err != nil {
			return nil, err
		}
		h.EOSTokenID = b
	}
	return json.Marshal(h)
}
