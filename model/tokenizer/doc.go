// Package tokenizer reads Hugging Face tokenizer.json files and turns text into
// token ids and back: BPE with a SentencePiece-style metaspace and byte fallback
// (Llama-2, TinyLlama, Mistral, stories260K) and byte-level BPE (GPT-2, Llama-3,
// Qwen2/3), with added and special tokens, the normalizers, pre-tokenizers,
// post-processors and decoders these families use, incremental decoding that
// never emits a broken UTF-8 sequence, and chat prompts rendered from the
// model's Jinja chat_template or a named built-in template.
//
// A Tokenizer is immutable after Load and safe for concurrent use; a
// StreamDecoder belongs to one generation stream.
package tokenizer
