package ingest

import (
	"context"
	"strings"
	"testing"

	"github.com/largeforge/largeforge/dataset/read"
	"github.com/largeforge/largeforge/schemas"
)

// Ingest takes OpenAI's chat and preference files: auto-detected as
// sharegpt and dpo, each line stored as the dictionary's record (a
// weight-0 assistant message as a weight-0 turn), a bad line rejected
// naming its field.
func TestScanOpenAIFormats(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		format schemas.Format
		check  func(schemas.Record) bool
	}{
		{"chat", `{"messages":[{"role":"system","content":"s"},{"role":"user","content":"u"},{"role":"assistant","content":"a","weight":0},{"role":"user","content":"u2"},{"role":"assistant","content":"a2"}]}
{"messages":[{"role":"user","content":"u"},{"role":"function","content":"f"}]}
`, schemas.FormatShareGPT, func(r schemas.Record) bool {
			c := r.ShareGPT.Conversations
			return len(c) == 5 && c[0].From == "system" && !c[2].Trained() && c[4].Trained()
		}},
		{"preference", `{"input":{"messages":[{"role":"user","content":"p"}]},"preferred_output":[{"role":"assistant","content":"c"}],"non_preferred_output":[{"role":"assistant","content":"r"}]}
{"input":{"messages":[{"role":"user","content":"p"}]},"preferred_output":[],"non_preferred_output":[{"role":"assistant","content":"r"}]}
`, schemas.FormatDPO, func(r schemas.Record) bool { return r.DPO == schemas.DPO{Prompt: "p", Chosen: "c", Rejected: "r"} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rr, err := read.Open("-", strings.NewReader(tt.in), 1<<20, "")
			if err != nil {
				t.Fatal(err)
			}
			var got []schemas.Record
			var rejects []read.Reject
			res, err := scan(context.Background(), rr, scanOptions{source: "t", workers: 1},
				func(a read.Accepted) error { got = append(got, a.Record); return nil },
				func(r read.Reject) error { rejects = append(rejects, r); return nil })
			if err != nil {
				t.Fatal(err)
			}
			if res.Format != tt.format || len(got) != 1 || !tt.check(got[0]) {
				t.Fatalf("format %s, records %+v", res.Format, got)
			}
			if len(rejects) != 1 || rejects[0].Line != 2 || rejects[0].Field == "" {
				t.Errorf("rejects %+v, want line 2 naming its field", rejects)
			}
		})
	}
}
