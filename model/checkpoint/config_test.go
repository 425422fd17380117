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

// TestParseConfigPublished parses config.json files as published on the
// Hugging Face hub.
func TestParseConfigPublished(t *testing.T) {
	tests := []struct {
		name    string
		json    string
		check   func(c Config) bool
		wantErr error
	}{
		{
			name: "Qwen2.5-0.5B",
			json: `{"architectures":["Qwen2ForCausalLM"],"attention_dropout":0.0,"bos_token_id":151643,"eos_token_id":151643,"hidden_act":"silu","hidden_size":896,"initializer_range":0.02,"intermediate_size":4864,"max_position_embeddings":32768,"max_window_layers":24,"model_type":"qwen2","num_attention_heads":14,"num_hidden_layers":24,"num_key_value_heads":2,"rms_norm_eps":1e-06,"rope_theta":1000000.0,"sliding_window":32768,"tie_word_embeddings":true,"torch_dtype":"bfloat16","transformers_version":"4.43.1","use_cache":true,"use_sliding_window":false,"vocab_size":151936}`,
			check: func(c Config) bool {
				return c.HeadDim == 64 && c.NumKVHeads == 2 && c.AttentionBias && c.TieWordEmbeddings && c.SlidingWindow == 0 && c.RopeTheta == 1e6 && c.EOSTokenIDs[0] == 151643
			},
		},
		{
			name: "Llama-3.2-1B",
			json: `{"architectures":["LlamaForCausalLM"],"attention_bias":false,"attention_dropout":0.0,"bos_token_id":128000,"eos_token_id":[128001,128008,128009],"head_dim":64,"hidden_act":"silu","hidden_size":2048,"initializer_range":0.02,"intermediate_size":8192,"max_position_embeddings":131072,"mlp_bias":false,"model_type":"llama","num_attention_heads":32,"num_hidden_layers":16,"num_key_value_heads":8,"pretraining_tp":1,"rms_norm_eps":1e-05,"rope_scaling":{"factor":32.0,"high_freq_factor":4.0,"low_freq_factor":1.0,"original_max_position_embeddings":8192,"rope_type":"llama3"},"rope_theta":500000.0,"tie_word_embeddings":true,"torch_dtype":"bfloat16","transformers_version":"4.45.0.dev0","use_cache":true,"vocab_size":128256}`,
			check: func(c Config) bool {
				return c.RopeScaling != nil && c.RopeScaling.Factor == 32 && len(c.EOSTokenIDs) == 3 && c.HeadDim == 64 && !c.AttentionBias
			},
		},
		{
			name:  "Mistral-7B-v0.1",
			json:  `{"architectures":["MistralForCausalLM"],"bos_token_id":1,"eos_token_id":2,"hidden_act":"silu","hidden_size":4096,"initializer_range":0.02,"intermediate_size":14336,"max_position_embeddings":32768,"model_type":"mistral","num_attention_heads":32,"num_hidden_layers":32,"num_key_value_heads":8,"rms_norm_eps":1e-05,"rope_theta":10000.0,"sliding_window":4096,"tie_word_embeddings":false,"torch_dtype":"bfloat16","transformers_version":"4.34.0.dev0","use_cache":true,"vocab_size":32000}`,
			check: func(c Config) bool { return c.SlidingWindow == 4096 && c.HeadDim == 128 && c.NumKVHeads == 8 },
		},
		{
			name:  "TinyLlama-1.1B-Chat",
			json:  `{"architectures":["LlamaForCausalLM"],"bos_token_id":1,"eos_token_id":2,"hidden_act":"silu","hidden_size":2048,"initializer_range":0.02,"intermediate_size":5632,"max_position_embeddings":2048,"model_type":"llama","num_attention_heads":32,"num_hidden_layers":22,"num_key_value_heads":4,"pretraining_tp":1,"rms_norm_eps":1e-05,"rope_scaling":null,"rope_theta":10000.0,"tie_word_embeddings":false,"torch_dtype":"bfloat16","transformers_version":"4.35.0","use_cache":true,"vocab_size":32000}`,
			check: func(c Config) bool { return c.HeadDim == 64 && c.RopeScaling == nil && c.NumKVHeads == 4 },
		},
		{
			name:    "Phi-3",
			json:    `{"architectures":["Phi3ForCausalLM"],"hidden_size":3072,"vocab_size":32064}`,
			wantErr: ErrUnknownArchitecture,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseConfig([]byte(tt.json))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(c) {
				t.Errorf("parsed %+v", c)
			}
		})
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(llamaJSON))
	f.Add([]byte(`{"architectures":["Qwen2ForCausalLM"],"vocab_size":8,"hidden_size":4,"intermediate_size":4,"num_hidden_layers":1,"num_attention_heads":2,"eos_token_id":[1,2]}`))
	f.Add([]byte(`{"architectures":["LlamaForCausalLM"],"vocab_size":8,"hidden_size":4,"intermediate_size":4,"num_hidden_layers":1,"num_attention_heads":2,"rope_scaling":{"type":"llama3","factor":2,"low_freq_factor":1,"high_freq_factor":2,"original_max_position_embeddings":4}}`))
	f.Add([]byte(`{"architectures":["MistralForCausalLM"],"head_dim":null,"eos_token_id":null}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data)
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("ParseConfig accepted an invalid config: %v", err)
		}
		b, err := c.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		again, err := ParseConfig(b)
		if err != nil {
			t.Fatalf("re-parse of %s: %v", b, err)
		}
		if c.TorchDtype == "" {
			again.TorchDtype = ""
		}
		if !reflect.DeepEqual(again, c) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", again, c)
		}
		_, _ = ParseGenerationConfig(data)
	})
}
