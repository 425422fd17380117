package checkpoint

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

const llamaJSON = `{
  "architectures": ["LlamaForCausalLM"],
  "model_type": "llama",
  "vocab_size": 512, "hidden_size": 64, "intermediate_size": 172,
  "num_hidden_layers": 5, "num_attention_heads": 8, "num_key_value_heads": 4,
  "head_dim": 8, "max_position_embeddings": 2048, "rms_norm_eps": 1e-05,
  "rope_theta": 10000.0, "rope_scaling": null, "attention_bias": false,
  "tie_word_embeddings": false, "bos_token_id": 1, "eos_token_id": 2,
  "torch_dtype": "float32"
}`

func TestParseConfig(t *testing.T) {
	base := Config{
		Architecture: ArchLlama, ModelType: "llama", VocabSize: 512, HiddenSize: 64,
		IntermediateSize: 172, NumLayers: 5, NumHeads: 8, NumKVHeads: 4, HeadDim: 8,
		MaxPositionEmbeddings: 2048, RMSNormEps: 1e-5, RopeTheta: 10000,
		BOSTokenID: 1, EOSTokenIDs: []int{2}, TorchDtype: "float32",
	}
	with := func(f func(c *Config)) Config {
		c := base
		c.EOSTokenIDs = append([]int{}, base.EOSTokenIDs...)
		f(&c)
		return c
	}
	tests := []struct {
		name    string
		json    string
		want    Config
		wantErr error
	}{
		{name: "llama", json: llamaJSON, want: base},
		{
			name: "eos list",
			json: `{"architectures":["LlamaForCausalLM"],"vocab_size":512,"hidden_size":64,"intermediate_size":172,"num_hidden_layers":5,"num_attention_heads":8,"num_key_value_heads":4,"rms_norm_eps":1e-5,"bos_token_id":1,"eos_token_id":[2,7],"torch_dtype":"float32"}`,
			want: with(func(c *Config) { c.EOSTokenIDs = []int{2, 7} }),
		},
		{
			name: "head_dim absent, kv heads absent, defaults",
			json: `{"architectures":["LlamaForCausalLM"],"vocab_size":512,"hidden_size":64,"intermediate_size":172,"num_hidden_layers":5,"num_attention_heads":8,"bos_token_id":1,"eos_token_id":2}`,
			want: with(func(c *Config) { c.NumKVHeads = 8; c.RMSNormEps = DefaultRMSNormEps; c.TorchDtype = "" }),
		},
		{
			name: "rope_scaling llama3",
			json: `{"architectures":["LlamaForCausalLM"],"vocab_size":512,"hidden_size":64,"intermediate_size":172,"num_hidden_layers":5,"num_attention_heads":8,"num_key_value_heads":4,"rms_norm_eps":1e-5,"rope_theta":500000.0,"bos_token_id":1,"eos_token_id":2,"torch_dtype":"float32",
			"rope_scaling":{"factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192,"rope_type":"llama3"}}`,
			want: with(func(c *Config) {
				c.RopeTheta = 500000
				c.RopeScaling = &RopeScaling{Type: "llama3", Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPositionEmbeddings: 8192}
			}),
		},
		{
			name: "rope_scaling legacy type key",
			json: `{"architectures":["LlamaForCausalLM"],"vocab_size":512,"hidden_size":64,"intermediate_size":172,"num_hidden_layers":5,"num_attention_heads":8,"num_key_value_heads":4,"rms_norm_eps":1e-5,"bos_token_id":1,"eos_token_id":2,"torch_dtype":"float32",
			"rope_scaling":{"factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192,"type":"llama3"}}`,
			want: with(func(c *Config) {
				c.RopeScaling = &RopeScaling{Type: "llama3", Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPositionEmbeddings: 8192}
			}),
		},
		{
			name: "qwen2 has q/k/v biases",
			json: `{"architectures":["Qwen2ForCausalLM"],"model_type":"qwen2","vocab_size":512,"hidden_size":64,"intermediate_size":172,"num_hidden_layers":5,"num_attention_heads":8,"num_key_value_heads":4,"rms_norm_eps":1e-5,"bos_token_id":1,"eos_token_id":2,"torch_dtype":"bfloat16","tie_word_embeddings":true,"sliding_window":4096,"use_sliding_window":false}`,
			want: with(func(c *Config) {
				c.Architecture, c.ModelType, c.AttentionBias, c.TieWordEmbeddings, c.TorchDtype = ArchQwen2, "qwen2", true, true, "bfloat16"
			}),
		},
		{
			name: "mistral sliding window",
			json: `{"architectures":["MistralForCausalLM"],"vocab_size":512,"hidden_size":64,"intermediate_size":172,"num_hidden_layers":5,"num_attention_heads":8,"num_key_value_heads":4,"rms_norm_eps":1e-5,"bos_token_id":1,"eos_token_id":2,"torch_dtype":"float32","sliding_window":4096}`,
			want: with(func(c *Config) { c.Architecture, c.ModelType, c.SlidingWindow = ArchMistral, "mistral", 4096 }),
		},
		{
			name: "transformers v5 rope_parameters and dtype",
			json: `{"architectures":["LlamaForCausalLM"],"vocab_size":512,"hidden_size":64,"intermediate_size":172,"num_hidden_layers":5,"num_attention_heads":8,"num_key_value_heads":4,"rms_norm_eps":1e-5,"bos_token_id":1,"eos_token_id":2,"dtype":"float32",
			"rope_parameters":{"rope_theta":500000.0,"factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192,"rope_type":"llama3"}}`,
			want: with(func(c *Config) {
				c.RopeTheta = 500000
				c.RopeScaling = &RopeScaling{Type: "llama3", Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPositionEmbeddings: 8192}
			}),
		},
		{
			name: "rope_parameters default type",
			json: `{"architectures":["LlamaForCausalLM"],"vocab_size":512,"hidden_size":64,"intermediate_size":172,"num_hidden_layers":5,"num_attention_heads":8,"num_key_value_heads":4,"rms_norm_eps":1e-5,"bos_token_id":1,"eos_token_id":2,"torch_dtype":"float32","rope_parameters":{"rope_theta":1000000.0,"rope_type":"default"}}`,
			want: with(func(c *Config) { c.RopeTheta = 1e6 }),
		},
		{name: "unknown architecture", json: `{"architectures":["GPT2LMHeadModel"],"vocab_size":5}`, wantErr: ErrUnknownArchitecture},
		{name: "no architectures", json: `{"vocab_size":5}`, wantErr: ErrUnknownArchitecture},
		{name: "missing hidden size", json: `{"architectures":["LlamaForCausalLM"],"vocab_size":512,"intermediate_size":172,"num_hidden_layers":5,"num_attention_heads":8}`, wantErr: ErrInvalidConfig},
		{name: "heads do not divide", json: `{"architectures":["LlamaForCausalLM"],"vocab_size":512,"hidden_size":64,"intermediate_size":172,"num_hidden_layers":5,"num_attention_heads":8,"num_key_value_heads":3}`, wantErr: ErrInvalidConfig},
		{name: "hidden not multiple of heads", json: `{"architectures":["LlamaForCausalLM"],"vocab_size":512,"hidden_size":65,"intermediate_size":172,"num_hidden_layers":5,"num_attention_heads":8}`, wantErr: ErrInvalidConfig},
		{name: "negative layers", json: `{"architectures":["LlamaForCausalLM"],"vocab_size":512,"hidden_size":64,"intermediate_size":172,"num_hidden_layers":-1,"num_attention_heads":8}`, wantErr: ErrInvalidConfig},
		{name: "eos out of vocab", json: `{"architectures":["LlamaForCausalLM"],"vocab_size":512,"hidden_size":64,"intermediate_size":172,"num_hidden_layers":5,"num_attention_heads":8,"eos_token_id":512}`, wantErr: ErrInvalidConfig},
		{name: "eos not int", json: `{"architectures":["LlamaForCausalLM"],"vocab_size":512,"hidden_size":64,"intermediate_size":172,"num_hidden_layers":5,"num_attention_heads":8,"eos_token_id":"x"}`, wantErr: ErrInvalidConfig},
		{name: "bad json", json: `{"architectures":`, wantErr: ErrInvalidConfig},
		{name: "unsupported rope scaling", json: `{"architectures":["LlamaForCausalLM"],"vocab_size":512,"hidden_size":64,"intermediate_size":172,"num_hidden_layers":5,"num_attention_heads":8,"rope_scaling":{"type":"yarn","factor":4}}`, wantErr: ErrUnsupported},
		{name: "llama3 scaling without factors", json: `{"architectures":["LlamaForCausalLM"],"vocab_size":512,"hidden_size":64,"intermediate_size":172,"num_hidden_layers":5,"num_attention_heads":8,"rope_scaling":{"rope_type":"llama3"}}`, wantErr: ErrInvalidConfig},
		{name: "gelu activation", json: `{"architectures":["LlamaForCausalLM"],"vocab_size":512,"hidden_size":64,"intermediate_size":172,"num_hidden_layers":5,"num_attention_heads":8,"hidden_act":"gelu"}`, wantErr: ErrUnsupported},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseConfig([]byte(tt.json))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseConfig: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got  %+v\nwant %+v", got, tt.want)
			}
			// Marshal and parse again: the same config.
			b, err := got.MarshalJSON()
			if err != nil {
				t.Fatal(err)
			}
			again, err := ParseConfig(b)
			if err != nil {
				t.Fatalf("re-parse %s: %v", b, err)
			}
			if got.TorchDtype == "" {
				again.TorchDtype = ""
			}
			if !reflect.DeepEqual(again, got) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", again, got)
			}
		})
	}
}

func TestLoadConfigNamesFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, ConfigFile), []byte(`{"architectures":["BertModel"]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := LoadConfig(dir)
	if !errors.Is(err, ErrUnknownArchitecture) {
		t.Fatalf("err = %v, want ErrUnknownArchitecture", err)
	}
	if want := filepath.Join(dir, ConfigFile); !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not name %s", err, want)
	}
	if _, err := LoadConfig(t.TempDir()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("absent config: err = %v, want os.ErrNotExist", err)
	}
}

func TestGenerationConfig(t *testing.T) {
	tests := []struct {
		name    string
		json    string
		want    GenerationConfig
		wantErr error
	}{
		{name: "stories", json: `{"bos_token_id":1,"eos_token_id":2,"do_sample":false,"max_length":2048}`, want: GenerationConfig{BOSTokenID: 1, EOSTokenIDs: []int{2}, MaxLength: 2048}},
		{name: "sampling", json: `{"bos_token_id":128000,"eos_token_id":[128001,128009],"do_sample":true,"temperature":0.6,"top_p":0.9,"top_k":40,"max_new_tokens":64}`,
			want: GenerationConfig{BOSTokenID: 128000, EOSTokenIDs: []int{128001, 128009}, DoSample: true, Temperature: 0.6, TopP: 0.9, TopK: 40, MaxNewTokens: 64}},
		{name: "top_p above one", json: `{"top_p":1.5}`, wantErr: ErrInvalidConfig},
		{name: "bad json", json: `[`, wantErr: ErrInvalidConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseGenerationConfig([]byte(tt.json))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
			b, err := got.MarshalJSON()
			if err != nil {
				t.Fatal(err)
			}
			again, err := ParseGenerationConfig(b)
			if err != nil || !reflect.DeepEqual(again, got) {
				t.Fatalf("round trip %s: %+v, %v", b, again, err)
			}
		})
	}
	g, err := LoadGenerationConfig(t.TempDir())
	if err != nil || !reflect.DeepEqual(g, GenerationConfig{}) {
		t.Fatalf("absent generation_config.json: %+v, %v; want zero value, nil", g, err)
	}
}
