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
