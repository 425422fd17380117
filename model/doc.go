// Package model runs Llama-family language models with GoMLX: checkpoints, tokenizers, generation, scoring and training. It never imports the bus.
package model
