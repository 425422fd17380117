// Package model runs Llama-family language models: the native CPU engine
// (blocked float32 kernels, AVX2/FMA assembly on amd64) and the GoMLX graph
// engine, both bound to the one decoder definition of model/checkpoint;
// generation, continuous batching, sampling and scoring. It never imports
// the bus, datasets or storage.
package model
