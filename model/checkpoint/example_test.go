package checkpoint_test

import (
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/largeforge/largeforge/model/checkpoint"
)

// Write a randomly initialised tiny Llama, describe it, load it and save a copy.
func ExampleInit() {
	dir, err := os.MkdirTemp("", "ck")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := checkpoint.Init("tiny", 42, dir); err != nil {
		log.Fatal(err)
	}
	info, err := checkpoint.Describe(dir)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(info.Config.Architecture, info.Parameters, "parameters", info.DTypes, "tokenizer:", info.HasTokenizer)

	ck, err := checkpoint.Load(dir)
	if err != nil {
		log.Fatal(err)
	}
	q := ck.Tensors["model.layers.0.self_attn.q_proj.weight"]
	fmt.Println("q_proj", q.Shape)
	if err := checkpoint.Save(filepath.Join(dir, "copy"), ck); err != nil {
		log.Fatal(err)
	}
	// Output:
	// LlamaForCausalLM 260416 parameters [F32] tokenizer: true
	// q_proj [64 64]
}

// Convert a llama.cpp GGUF file into a Hugging Face checkpoint directory.
func ExampleImportGGUF() {
	if err := checkpoint.ImportGGUF("stories260K.gguf", "stories260K-hf"); err != nil {
		log.Fatal(err)
	}
	ck, err := checkpoint.Load("stories260K-hf")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(ck.Config.NumLayers, "layers")
}

// Bind a checkpoint's tensors to the typed decoder; a missing tensor is an
// error naming it.
func ExampleBindTensors() {
	cfg, err := checkpoint.PresetConfig("tiny")
	if err != nil {
		log.Fatal(err)
	}
	tensors, err := checkpoint.InitTensors(cfg, 1)
	if err != nil {
		log.Fatal(err)
	}
	d, err := checkpoint.BindTensors(cfg, tensors)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(d.Layers), "layers; layer 0 k_proj", d.Layers[0].K.Shape)
	delete(tensors, "model.norm.weight")
	_, err = checkpoint.BindTensors(cfg, tensors)
	fmt.Println(err)
	// Output:
	// 5 layers; layer 0 k_proj [32 64]
	// tensor "model.norm.weight": missing tensor
}
