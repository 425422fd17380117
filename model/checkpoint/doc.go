// Package checkpoint reads and writes Llama-family checkpoints in the Hugging
// Face directory layout (DATA_DICTIONARY §4.1): config.json,
// generation_config.json, model.safetensors or a sharded
// model.safetensors.index.json, and the tokenizer files. It also imports
// llama.cpp GGUF files into that layout and writes randomly initialised
// models of named presets. Weights are held as float32 on the CPU whatever
// their stored dtype (F32, F16, BF16).
package checkpoint
