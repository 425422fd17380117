// Package train fine-tunes a Llama-family checkpoint with supervised
// fine-tuning (SFT) on the pure Go GoMLX backend: it renders Alpaca and
// ShareGPT records into token sequences whose loss falls on response tokens
// only, and runs AdamW with a learning-rate schedule, gradient accumulation
// and gradient clipping as the compiled GoMLX graphs of one train step,
// saving Hugging Face checkpoints (checkpoint-<step>/) as it goes.
package train
