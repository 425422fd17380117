package ingest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/largeforge/largeforge/schemas"
)

func readAllRows(t *testing.T, rr rowReader) []Row {
	t.Helper()
	var rows []Row
	for {
		r, err := rr.Next()
		if err == io.EOF {
			return rows
		}
		if err != nil {
			t.Fatal(err)
		}
		rows = append(rows, r)
	}
}

func TestJSONLReader(t *testing.T) {
	tests := []struct {
		name      string
		in        string
		maxLine   int
		wantLines []int64
		wantData  []string
		wantRules []string
	}{
		{"plain", "{\"a\":1}\n{\"b\":2}\n", 100, []int64{1, 2}, []string{`{"a":1}`, `{"b":2}`}, []string{"", ""}},
		{"bom and crlf", "\ufeff{\"a\":1}\r\n{\"b\":2}\r\n", 100, []int64{1, 2}, []string{`{"a":1}`, `{"b":2}`}, []string{"", ""}},
		{"blank lines skipped", "\n  \n{\"a\":1}\n\n", 100, []int64{3}, []string{`{"a":1}`}, []string{""}},
		{"no final newline", "{\"a\":1}\n{\"b\":", 100, []int64{1, 2}, []string{`{"a":1}`, `{"b":`}, []string{"", ""}},
		{"too long", "{\"a\":1}\n" + strings.Repeat("x", 5000) + "\n{\"c\":3}\n", 1024, []int64{1, 2, 3}, []string{`{"a":1}`, strings.Repeat("x", 4096), `{"c":3}`}, []string{"", "maxLineBytes", ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rows := readAllRows(t, newJSONLReader(bufio.NewReaderSize(strings.NewReader(tt.in), 16), nil, tt.maxLine))
			if len(rows) != len(tt.wantLines) {
				t.Fatalf("%d rows, want %d: %+v", len(rows), len(tt.wantLines), rows)
			}
			for i, r := range rows {
				data := string(r.Data)
				if r.Rule == "maxLineBytes" { // a prefix is kept, at most keepTooLong bytes
					if len(data) > keepTooLong || !strings.HasPrefix(tt.wantData[i], data) || len(data) < tt.maxLine {
						t.Errorf("row %d keeps %d bytes of the long line", i, len(data))
					}
					data = tt.wantData[i]
				}
				if r.Line != tt.wantLines[i] || data != tt.wantData[i] || r.Rule != tt.wantRules[i] {
					t.Errorf("row %d = {%d %.40q %q}, want {%d %.40q %q}", i, r.Line, r.Data, r.Rule, tt.wantLines[i], tt.wantData[i], tt.wantRules[i])
				}
			}
		})
	}
}

func TestJSONArrayReader(t *testing.T) {
	rows := readAllRows(t, newJSONArrayReader(bufio.NewReader(strings.NewReader("\ufeff [ {\"a\":1}, {\"b\":2} ]")), nil))
	if len(rows) != 2 || string(rows[1].Data) != `{"b":2}` || rows[1].Line != 2 {
		t.Fatalf("rows = %+v", rows)
	}
	rows = readAllRows(t, newJSONArrayReader(bufio.NewReader(strings.NewReader(`[{"a":1}, {"b":`)), nil))
	if len(rows) != 2 || rows[1].Rule != "json" {
		t.Fatalf("truncated array: rows = %+v", rows)
	}
	_, err := newJSONArrayReader(bufio.NewReader(strings.NewReader(`{"a":1}`)), nil).Next()
	if !errors.Is(err, ErrSource) {
		t.Fatalf("an object is not an array: err = %v", err)
	}
}

func TestScanAutoAndOrder(t *testing.T) {
	var in strings.Builder
	for i := 0; i < 1000; i++ {
		if i%7 == 3 {
			in.WriteString("{\"instruction\":\"\",\"output\":\"x\"}\n")
			continue
		}
		in.WriteString(`{"instruction":"n` + strings.Repeat("i", i%5) + `","output":"` + string(rune('a'+i%26)) + "\"}\n")
	}
	rr := newJSONLReader(bufio.NewReader(strings.NewReader(in.String())), nil, 1<<20)
	var lines []int64
	rejected := 0
	res, err := scan(context.Background(), rr, scanOptions{source: "t", workers: 3, chunk: 7},
		func(a Accepted) error { lines = append(lines, a.Line); return nil },
		func(r Reject) error { rejected++; return nil })
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

// FuzzJSONLReader: any bytes give rows whose data never exceeds the bound and
// whose line numbers increase.
func FuzzJSONLReader(f *testing.F) {
	f.Add([]byte("{\"a\":1}\n\n\ufeff{}\r\n"), 64)
	f.Add(bytes.Repeat([]byte("x"), 300), 32)
	f.Fuzz(func(t *testing.T, data []byte, maxLine int) {
		if maxLine < 1 || maxLine > 1<<16 {
			return
		}
		rr := newJSONLReader(bufio.NewReaderSize(bytes.NewReader(data), 16), nil, maxLine)
		last := int64(0)
		for {
			r, err := rr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.Line <= last {
				t.Fatalf("line %d after %d", r.Line, last)
			}
			last = r.Line
			if len(r.Data) > maxLine+2 && len(r.Data) > keepTooLong {
				t.Fatalf("row of %d bytes over the bound %d", len(r.Data), maxLine)
			}
		}
	})
}
