package submit_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/largeforge/largeforge/internal/benchenv"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/producers/submit"
)

// BenchmarkSubmit publishes a 20,000-row job file to an embedded JetStream
// server and reports rows/s (the target is at least 20,000 rows/s).
func BenchmarkSubmit(b *testing.B) {
	benchenv.Log(b)
	const rows = 20000
	p := filepath.Join(b.TempDir(), "req.jsonl")
	var data []byte
	for i := range rows {
		data = fmt.Appendf(data, `{"custom_id":"r%d","prompt":"Once upon a time there was a little dog number %d","max_tokens":32}`+"\n", i, i)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		b.Fatal(err)
	}
	_, bus := pipelinetest.StartBus(b)
	ctx := context.Background()
	b.ResetTimer()
	var secs float64
	for range b.N {
		s, err := submit.New(ctx, bus, submit.Config{Model: "stories"}, pipelinetest.Logger(b))
		if err != nil {
			b.Fatal(err)
		}
		sum, err := s.Submit(ctx, p, nil)
		if err != nil {
			b.Fatal(err)
		}
		if sum.Published != rows {
			b.Fatalf("%+v", sum)
		}
		secs += sum.Elapsed.Seconds()
	}
	b.ReportMetric(float64(rows*b.N)/secs, "rows/s")
}
