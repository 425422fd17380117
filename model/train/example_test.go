package train_test

import (
	"fmt"

	"github.com/largeforge/largeforge/model/train"
)

// The Alpaca prompt an instruction (and an optional input) is trained
// behind; only the response after it carries loss.
func ExampleAlpacaPrompt() {
	fmt.Print(train.AlpacaPrompt("Name a colour.", ""))
	// Output:
	// Below is an instruction that describes a task. Write a response that appropriately completes the request.
	//
	// ### Instruction:
	// Name a colour.
	//
	// ### Response:
}

// The learning rate of the cosine schedule with 10% warmup over 100 steps.
func ExampleLearningRate() {
	warmup := train.WarmupSteps(0.1, 100)
	for _, step := range []int{0, 5, 10, 55, 99} {
		lr, _ := train.LearningRate("cosine", 2e-5, step, warmup, 100)
		fmt.Printf("step %d: %.3g\n", step, lr)
	}
	// Output:
	// step 0: 0
	// step 5: 1e-05
	// step 10: 2e-05
	// step 55: 1e-05
	// step 99: 6.09e-09
}
