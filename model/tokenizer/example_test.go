package tokenizer_test

import (
	"fmt"
	"log"

	"github.com/largeforge/largeforge/model/tokenizer"
)

func Example() {
	// A model directory would use tokenizer.LoadDir(dir); here a minimal
	// byte-level tokenizer.json is generated instead.
	data, err := tokenizer.ByteLevelJSON(nil)
	if err != nil {
		log.Fatal(err)
	}
	tok, err := tokenizer.Parse(data)
	if err != nil {
		log.Fatal(err)
	}
	ids := tok.Encode("hi é", true)
	fmt.Println(ids)
	fmt.Printf("%q\n", tok.Decode(ids, true))
	// Output:
	// [256 71 72 220 127 102]
	// "hi é"
}

func ExampleTokenizer_NewStreamDecoder() {
	data, _ := tokenizer.ByteLevelJSON(nil)
	tok, _ := tokenizer.Parse(data)
	d := tok.NewStreamDecoder(true)
	for _, id := range tok.Encode("né", false) {
		fmt.Printf("%q ", d.Add(id)) // "é" is two byte tokens: held until complete
	}
	fmt.Printf("%q\n", d.Flush())
	// Output: "n" "" "é" ""
}

func ExampleRenderBuiltinTemplate() {
	prompt, err := tokenizer.RenderBuiltinTemplate("chatml", []tokenizer.Message{
		{Role: "system", Content: "Be brief."},
		{Role: "user", Content: "Hi"},
	}, true)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(prompt)
	// Output:
	// <|im_start|>system
	// Be brief.<|im_end|>
	// <|im_start|>user
	// Hi<|im_end|>
	// <|im_start|>assistant
}
