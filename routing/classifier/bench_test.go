package classifier_test

import (
	"testing"

	"github.com/largeforge/largeforge/routing/classifier"
)

// BenchmarkPredict is the learned stage's cost per routed prompt (default
// 4096 features, three experts).
func BenchmarkPredict(b *testing.B) {
	c, err := classifier.Train(b.Context(), toySet(60, 8), classifier.Config{Epochs: 2})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Predict("Why does my golang handler crash with a nil pointer when the loop ends?"); err != nil {
			b.Fatal(err)
		}
	}
}
