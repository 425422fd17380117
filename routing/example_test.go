package routing_test

import (
	"fmt"

	"github.com/largeforge/largeforge/routing"
	"github.com/largeforge/largeforge/schemas"
)

// The rule stage scores experts by the keywords and domains in a prompt.
func ExampleRouter_Route() {
	coder := schemas.DefaultExpertConfig()
	coder.Name, coder.ModelPath, coder.Keywords = "coder", "models/coder", []string{"python", "function"}
	stories := schemas.DefaultExpertConfig()
	stories.Name, stories.ModelPath, stories.Keywords = "stories", "models/stories", []string{"story"}
	r, err := routing.New([]schemas.ExpertConfig{coder, stories})
	if err != nil {
		panic(err)
	}
	d, _ := r.Route("fix this python function", nil)
	fmt.Printf("%s %.2f by %s; next %s %.2f\n", d.Expert, d.Confidence, d.Stage, d.Alternatives[0].Expert, d.Alternatives[0].Confidence)
	// Output: coder 1.00 by rules; next stories 0.00
}
