// Package train fine-tunes a Llama-family checkpoint with supervised
// fine-tuning (SFT, full or LoRA) and DPO on the pure Go GoMLX backend: it
// renders Alpaca records (with the Alpaca prompt, or the model's chat
// template with prompt_template: chat) and ShareGPT records into token
// sequences whose loss falls on response tokens only, optionally packs
// them into rows of the maximum length, and runs AdamW with a
// learning-rate schedule, gradient accumulation and gradient clipping as
// compiled GoMLX graphs, saving Hugging Face checkpoints
// (checkpoint-<step>/) as it goes.
//
// Speed: batches are padded to a fixed set of lengths (bucketLen: at most
// a quarter of padding), so few graphs compile; weights and AdamW moments
// stay backend buffers between steps; the last micro-batch of each
// optimizer step runs forward, backward and the AdamW update as one
// execution (one graph per length), with the parameters, moments and
// accumulated gradients donated to it. On the pure Go backend the 15m
// preset trains at about two thirds of the backend's large-matmul rate;
// tiny models (head_dim 8) run far below it, since attention and small
// products dominate (see bench_test.go).
package train
