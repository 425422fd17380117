// Package checkpoint reads and writes Llama-family checkpoints in the Hugging
// Face directory layout (DATA_DICTIONARY §4.1): config.json,
// generation_config.json, model.safetensors or a sharded
// model.safetensors.index.json, and the tokenizer files. It also imports
// llama.cpp GGUF files into that layout and writes randomly initialised
// models of named presets. Weights are held as float32 on the CPU whatever
// their stored dtype (F32, F16, BF16). Decoder is the one typed definition
// of the decoder's weights (names, llama.cpp names, shapes from the config)
// that the engines and the trainer bind to (Bind); its layout is the only
// place tensor names are made.
package checkpoint
