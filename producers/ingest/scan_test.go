package ingest

import (
	"context"
	"strings"
	"testing"

	"github.com/largeforge/largeforge/dataset/read"
	"github.com/largeforge/largeforge/schemas"
)

func TestScanAutoAndOrder(t *testing.T) {
	var in strings.Builder
	for i := 0; i < 1000; i++ {
		if i%7 == 3 {
			in.WriteString("{\"instruction\":\"\",\"output\":\"x\"}\n")
			continue
		}
		in.WriteString(`{"instruction":"n` + strings.Repeat("i", i%5) + `","output":"` + string(rune('a'+i%26)) + "\"}\n")
	}
	rr, err := read.Open("-", strings.NewReader(in.String()), 1<<20, "")
	if err != nil {
		t.Fatal(err)
	}
	var lines []int64
	rejected := 0
	res, err := scan(context.Background(), rr, scanOptions{source: "t", workers: 3, chunk: 7},
		func(a read.Accepted) error { lines = append(lines, a.Line); return nil },
		func(r read.Reject) error { rejected++; return nil })
	if err != nil {
		t.Fatal(err)
	}
	if res.Format != schemas.FormatAlpaca || !res.Detected || res.Rows != 1000 {
		t.Fatalf("result %+v", res)
	}
	for i := 1; i < len(lines); i++ {
		if lines[i] <= lines[i-1] {
			t.Fatalf("records out of order at %d: %v", i, lines[i-1:i+1])
		}
	}
	if rejected != 143 || len(lines) != 857 {
		t.Fatalf("%d accepted, %d rejected", len(lines), rejected)
	}
}
