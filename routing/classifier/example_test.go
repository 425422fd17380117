package classifier_test

import (
	"context"
	"fmt"

	"github.com/largeforge/largeforge/routing/classifier"
)

func Example() {
	rows := []classifier.Example{
		{Prompt: "Why does my golang handler crash?", Expert: "code"},
		{Prompt: "Refactor this sql query", Expert: "code"},
		{Prompt: "The regex returns the wrong index", Expert: "code"},
		{Prompt: "Tell me a tale about a tiny dragon", Expert: "stories"},
		{Prompt: "Write a bedtime story about a fox", Expert: "stories"},
		{Prompt: "A legend about a brave princess", Expert: "stories"},
	}
	c, err := classifier.Train(context.Background(), rows, classifier.Config{Dim: 512, Epochs: 30})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	preds, err := c.Predict("a tale about a sleepy dragon")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(c.Labels(), preds[0].Expert, preds[0].Probability > 0.5)
	// Output: [code stories] stories true
}
