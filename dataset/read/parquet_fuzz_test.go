package read

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/parquet-go/parquet-go"

	"github.com/largeforge/largeforge/schemas"
)

// parquetBytes is rows written as one Parquet file.
func parquetBytes[T any](f *testing.F, rows []T) []byte {
	f.Helper()
	var buf bytes.Buffer
	if err := parquet.Write(&buf, rows); err != nil {
		f.Fatal(err)
	}
	return buf.Bytes()
}

// tempFile writes data to a file named name in a fresh directory and opens it.
func tempFile(t *testing.T, name string, data []byte) *os.File {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fh.Close() })
	return fh
}

type fuzzAlpaca struct {
	Instruction string  `parquet:"instruction"`
	Input       *string `parquet:"input,optional"`
	Output      string  `parquet:"output"`
}

type fuzzText struct {
	Text string `parquet:"text"`
}

// FuzzParquetSource: a dataset's Parquet input file is outside bytes; any
// file opens with an ErrSource error or yields rows until io.EOF or an error,
// never a panic, and a row's data is the JSON of a record or a reject.
func FuzzParquetSource(f *testing.F) {
	in := "ctx"
	f.Add(parquetBytes(f, []fuzzAlpaca{{Instruction: "a", Output: "b"}, {Instruction: "c", Input: &in, Output: "\xff"}}), "")
	f.Add(parquetBytes(f, []fuzzText{{Text: "hello"}}), "text")
	f.Add(parquetBytes(f, []fuzzText{{Text: "hello"}}), "alpaca")
	f.Add([]byte("PAR1 not really PAR1"), "")
	f.Fuzz(func(t *testing.T, data []byte, format string) {
		fm := schemas.Format("")
		if format != "" {
			var err error
			if fm, err = schemas.ParseFormat(format); err != nil {
				return
			}
		}
		path := filepath.Join(t.TempDir(), "in.parquet")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		src, err := Open(path, nil, 1<<16, fm)
		if err != nil {
			if !errors.Is(err, ErrSource) {
				t.Fatalf("error %v does not wrap ErrSource", err)
			}
			return
		}
		defer src.Close()
		for n := 0; n < 10000; n++ {
			r, err := src.Next()
			if err != nil {
				return
			}
			if r.Rule == "" && len(r.Data) == 0 {
				t.Fatalf("row %d has neither data nor a rule", r.Line)
			}
		}
	})
}

type fuzzRequest struct {
	CustomID  *string `parquet:"custom_id,optional"`
	Prompt    *string `parquet:"prompt,optional"`
	MaxTokens *int64  `parquet:"max_tokens,optional"`
}

// FuzzRequestParquet: a batch job's Parquet input is outside bytes; any file
// is refused or read to io.EOF or an error, and every row is JSON within the
// bound.
func FuzzRequestParquet(f *testing.F) {
	id, p, mt := "r1", "hi", int64(8)
	f.Add(parquetBytes(f, []fuzzRequest{{CustomID: &id, Prompt: &p, MaxTokens: &mt}, {Prompt: &p}}), 256)
	f.Add(parquetBytes(f, []fuzzText{{Text: "x"}}), 4)
	f.Add([]byte("PAR1"), 16)
	f.Fuzz(func(t *testing.T, data []byte, max int) {
		if max < 1 || max > 1<<20 {
			return
		}
		pr, err := NewRequestParquet(tempFile(t, "in.parquet", data), max)
		if err != nil {
			return
		}
		for n := 0; n < 10000; n++ {
			row, tooLarge, err := pr.Next()
			if err != nil {
				if err != io.EOF && row != nil {
					t.Fatalf("row %q with error %v", row, err)
				}
				return
			}
			if !tooLarge && len(row) > max {
				t.Fatalf("row of %d bytes over the bound %d", len(row), max)
			}
		}
	})
}
