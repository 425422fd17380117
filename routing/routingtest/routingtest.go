// Package routingtest holds the experts and the trained classifier that the
// routing, gateway and submit tests route over.
package routingtest

import (
	"context"
	"math/rand/v2"
	"testing"

	"github.com/largeforge/largeforge/internal/samples"
	"github.com/largeforge/largeforge/routing/classifier"
	"github.com/largeforge/largeforge/schemas"
)

// Expert is a valid expert with the given priority, keywords and domains.
func Expert(name string, priority int, keywords, domains []string) schemas.ExpertConfig {
	e := schemas.DefaultExpertConfig()
	e.Name, e.ModelPath, e.Priority, e.Keywords, e.Domains = name, "models/"+name, priority, keywords, domains
	return e
}

// Experts are coder (priority 1), stories and general (priority 5, no rule).
func Experts() []schemas.ExpertConfig {
	return []schemas.ExpertConfig{
		Expert("coder", 1, []string{"python", "function", "stack trace"}, []string{"code"}),
		Expert("stories", 0, []string{"story", "once upon a time"}, []string{"fiction"}),
		Expert("general", 5, nil, nil),
	}
}

// SampleClassifier trains the learned stage on the sample routing rows
// (experts code, math and stories); it is closed when the test ends.
func SampleClassifier(t *testing.T) *classifier.Classifier {
	t.Helper()
	var ex []classifier.Example
	for _, r := range samples.Router(rand.New(rand.NewPCG(5, 5)), 150) {
		ex = append(ex, classifier.Example{Prompt: r.Prompt, Expert: r.Expert})
	}
	c, err := classifier.Train(context.Background(), ex, classifier.Config{Dim: 1024, Epochs: 10})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}
