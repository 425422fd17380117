package read

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/parquet-go/parquet-go"

	"github.com/largeforge/largeforge/schemas"
)

func readAllRows(t *testing.T, rr Source) []Row {
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

// writeParquet writes rows (a slice of one struct type) to a Parquet file and
// returns its path.
func writeParquet[T any](t *testing.T, rows []T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "in.parquet")
	if err := parquet.WriteFile(path, rows); err != nil {
		t.Fatal(err)
	}
	return path
}

// Parquet columns keep their kind: a column of the wrong type is rejected with
// rule type, as the same value in JSONL is, invalid UTF-8 with rule utf8; a
// null is absent. Nothing is converted to a string on the way.
func TestParquetColumnTypes(t *testing.T) {
	type alpacaInt struct {
		Instruction int64   `parquet:"instruction"`
		Input       *string `parquet:"input,optional"`
		Output      string  `parquet:"output"`
		ID          []byte  `parquet:"id"` // not a record column: not read into the record
	}
	type dpoMixed struct {
		Prompt   string  `parquet:"prompt"`
		Chosen   bool    `parquet:"chosen"`
		Rejected float64 `parquet:"rejected"`
	}
	type turn struct {
		From  string `parquet:"from"`
		Value int32  `parquet:"value"`
	}
	type chat struct {
		Conversations []turn `parquet:"conversations,list"`
	}
	type alpacaBytes struct {
		Instruction *string `parquet:"instruction,optional"`
		Input       *string `parquet:"input,optional"`
		Output      []byte  `parquet:"output"`
	}
	ctx := "ctx"
	instr := "i"
	tests := []struct {
		name       string
		path       string
		wantFormat schemas.Format
		wantData   []string
		wantField  []string
		wantRule   []string
	}{
		{name: "int64 instruction", path: writeParquet(t, []alpacaInt{{1, &ctx, "o", []byte("\xff")}, {2, nil, "p", nil}}),
			wantFormat: schemas.FormatAlpaca,
			wantData:   []string{`{"instruction":1,"input":"ctx","output":"o"}`, `{"instruction":2,"output":"p"}`},
			wantField:  []string{"instruction", "instruction"}, wantRule: []string{"type", "type"}},
		{name: "bool and double dpo", path: writeParquet(t, []dpoMixed{{"p", true, 1.5}}),
			wantFormat: schemas.FormatDPO,
			wantData:   []string{`{"prompt":"p","chosen":true,"rejected":1.5}`},
			wantField:  []string{"chosen"}, wantRule: []string{"type"}},
		{name: "int32 turn value", path: writeParquet(t, []chat{{[]turn{{"human", 1}, {"gpt", 2}}}}),
			wantFormat: schemas.FormatShareGPT,
			wantData:   []string{`{"conversations":[{"from":"human","value":1},{"from":"gpt","value":2}]}`},
			wantField:  []string{"conversations[0].value"}, wantRule: []string{"type"}},
		{name: "strings kept byte for byte", path: writeParquet(t, []alpacaBytes{{&instr, nil, []byte("a\"\\\n\xffz")}, {nil, nil, []byte("o")}, {&instr, nil, []byte("ok")}}),
			wantFormat: schemas.FormatAlpaca,
			wantData:   []string{"{\"instruction\":\"i\",\"output\":\"a\\\"\\\\\\u000a\xffz\"}", `{"output":"o"}`, `{"instruction":"i","output":"ok"}`},
			wantField:  []string{"output", "instruction", ""}, wantRule: []string{"utf8", "required", ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rr, err := Open(tt.path, nil, 1<<20, "")
			if err != nil {
				t.Fatal(err)
			}
			defer rr.Close()
			if f, _ := rr.Format(); f != tt.wantFormat {
				t.Fatalf("format %s, want %s", f, tt.wantFormat)
			}
			rows := readAllRows(t, rr)
			if len(rows) != len(tt.wantData) {
				t.Fatalf("%d rows, want %d", len(rows), len(tt.wantData))
			}
			items := Decode(tt.path, tt.wantFormat, rows, 0)
			for i, r := range rows {
				if string(r.Data) != tt.wantData[i] || r.Line != int64(i+1) {
					t.Errorf("row %d = %d %q, want %d %q", i, r.Line, r.Data, i+1, tt.wantData[i])
				}
				rej := items[i].Rej
				switch {
				case tt.wantRule[i] == "" && rej != nil:
					t.Errorf("row %d rejected: %+v", i, rej)
				case tt.wantRule[i] != "" && (rej == nil || rej.Rule != tt.wantRule[i] || rej.Field != tt.wantField[i]):
					t.Errorf("row %d: reject %+v, want field %q rule %q", i, rej, tt.wantField[i], tt.wantRule[i])
				}
			}
		})
	}
}
