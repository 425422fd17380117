package ingest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/parquet-go/parquet-go"

	"github.com/largeforge/largeforge/schemas"
)

// Row is one input record before decoding: its 1-based line (JSONL), element
// (JSON array) or row (Parquet) number and its bytes. A row that cannot be read
// whole carries Rule and Problem instead, and Data holds what was kept of it.
type Row struct {
	Line    int64
	Data    []byte
	Rule    string
	Problem string
}

// rowReader yields the rows of one source in order.
type rowReader interface {
	Next() (Row, error) // io.EOF at the end
	Format() (schemas.Format, bool)
	BytesRead() int64
	Close() error
}

// Source kinds, chosen by the file's extension (stdin: sniffed).
const (
	kindJSONL   = "jsonl"
	kindJSON    = "json"
	kindParquet = "parquet"
)

var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// openSource opens path ("-" is stdin) and returns a reader of its rows.
func openSource(path string, stdin io.Reader, maxLine int, format schemas.Format) (rowReader, error) {
	if path == "-" {
		br := bufio.NewReaderSize(stdin, 1<<16)
		peek, _ := br.Peek(64)
		peek = bytes.TrimPrefix(peek, utf8BOM)
		if t := bytes.TrimLeft(peek, " \t\r\n"); len(t) > 0 && t[0] == '[' {
			return newJSONArrayReader(br, nil), nil
		}
		return newJSONLReader(br, nil, maxLine), nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSource, err)
	}
	switch kind := sourceKind(path); kind {
	case kindParquet:
		r, err := newParquetReader(f, format)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("%w: %s: %v", ErrSource, path, err)
		}
		return r, nil
	case kindJSON:
		return newJSONArrayReader(bufio.NewReaderSize(f, 1<<16), f), nil
	default:
		return newJSONLReader(bufio.NewReaderSize(f, 1<<16), f, maxLine), nil
	}
}

func sourceKind(path string) string {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".parquet", ".pq":
		return kindParquet
	case ".json":
		return kindJSON
	default:
		return kindJSONL
	}
}

// jsonlReader reads one record per line. Blank lines are skipped, a UTF-8 BOM at
// the start and CR before LF are dropped, and a line longer than maxLine is
// reported (with its first bytes) without ever being held whole in memory.
type jsonlReader struct {
	r       *bufio.Reader
	c       io.Closer
	maxLine int
	line    int64
	read    int64
	buf     []byte
}

func newJSONLReader(r *bufio.Reader, c io.Closer, maxLine int) *jsonlReader {
	return &jsonlReader{r: r, c: c, maxLine: maxLine}
}

// keepTooLong is how much of an over-long line a reject keeps.
const keepTooLong = 4 << 10

func (j *jsonlReader) Next() (Row, error) {
	for {
		j.buf = j.buf[:0]
		tooLong := false
		var total int64
		for {
			chunk, err := j.r.ReadSlice('\n')
			total += int64(len(chunk))
			if !tooLong {
				if len(j.buf)+len(chunk) > j.maxLine+2 { // +2: the line end
					tooLong = true
					keep := keepTooLong - len(j.buf)
					if keep > len(chunk) {
						keep = len(chunk)
					}
					if keep > 0 {
						j.buf = append(j.buf, chunk[:keep]...)
					}
				} else {
					j.buf = append(j.buf, chunk...)
				}
			}
			if err == bufio.ErrBufferFull {
				continue
			}
			if err != nil && err != io.EOF {
				return Row{}, err
			}
			j.read += total
			if total == 0 && err == io.EOF {
				return Row{}, io.EOF
			}
			break
		}
		j.line++
		data := j.buf
		if j.line == 1 {
			data = bytes.TrimPrefix(data, utf8BOM)
		}
		if tooLong {
			return Row{Line: j.line, Data: append([]byte(nil), data...), Rule: "maxLineBytes",
				Problem: fmt.Sprintf("line is %d bytes, over the limit of %d", total, j.maxLine)}, nil
		}
		data = bytes.TrimSuffix(data, []byte{'\n'})
		data = bytes.TrimSuffix(data, []byte{'\r'})
		if len(bytes.TrimSpace(data)) == 0 {
			continue
		}
		return Row{Line: j.line, Data: append([]byte(nil), data...)}, nil
	}
}

func (j *jsonlReader) Format() (schemas.Format, bool) { return "", false }
func (j *jsonlReader) BytesRead() int64               { return j.read }
func (j *jsonlReader) Close() error {
	if j.c != nil {
		return j.c.Close()
	}
	return nil
}

// jsonArrayReader reads the elements of one top-level JSON array.
type jsonArrayReader struct {
	c       io.Closer
	cr      *countingReader
	dec     *json.Decoder
	n       int64
	started bool
	done    bool
}

func newJSONArrayReader(r *bufio.Reader, c io.Closer) *jsonArrayReader {
	if b, err := r.Peek(3); err == nil && bytes.Equal(b, utf8BOM) {
		r.Discard(3)
	}
	cr := &countingReader{r: r}
	return &jsonArrayReader{c: c, cr: cr, dec: json.NewDecoder(cr)}
}

func (j *jsonArrayReader) Next() (Row, error) {
	if j.done {
		return Row{}, io.EOF
	}
	if !j.started {
		j.started = true
		tok, err := j.dec.Token()
		if err != nil {
			j.done = true
			if err == io.EOF {
				return Row{}, io.EOF
			}
			return Row{}, fmt.Errorf("%w: not a JSON array: %v", ErrSource, err)
		}
		if d, ok := tok.(json.Delim); !ok || d != '[' {
			j.done = true
			return Row{}, fmt.Errorf("%w: a .json file must hold one JSON array of records (use .jsonl for one record per line)", ErrSource)
		}
	}
	if !j.dec.More() {
		j.done = true
		return Row{}, io.EOF
	}
	j.n++
	var raw json.RawMessage
	if err := j.dec.Decode(&raw); err != nil {
		// The array cannot be resynchronised after a syntax error: report the
		// element and end the source.
		j.done = true
		return Row{Line: j.n, Rule: "json", Problem: fmt.Sprintf("element %d: %v (the rest of the array cannot be read)", j.n, err)}, nil
	}
	return Row{Line: j.n, Data: []byte(raw)}, nil
}

func (j *jsonArrayReader) Format() (schemas.Format, bool) { return "", false }
func (j *jsonArrayReader) BytesRead() int64               { return j.cr.n }
func (j *jsonArrayReader) Close() error {
	if j.c != nil {
		return j.c.Close()
	}
	return nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// Parquet input: the columns of the dictionary's formats. Optional pointers tell
// an absent value (null) from an empty string, so validation sees what the file holds.
type pqAlpaca struct {
	Instruction *string `parquet:"instruction,optional"`
	Input       *string `parquet:"input,optional"`
	Output      *string `parquet:"output,optional"`
}

type pqTurn struct {
	From  *string `parquet:"from,optional"`
	Value *string `parquet:"value,optional"`
}

type pqShareGPT struct {
	Conversations []pqTurn `parquet:"conversations,list"`
}

type pqDPO struct {
	Prompt   *string `parquet:"prompt,optional"`
	Chosen   *string `parquet:"chosen,optional"`
	Rejected *string `parquet:"rejected,optional"`
}

var formatColumns = map[schemas.Format][]string{
	schemas.FormatAlpaca:   {"instruction", "output"},
	schemas.FormatShareGPT: {"conversations"},
	schemas.FormatDPO:      {"prompt", "chosen", "rejected"},
}

// parquetReader turns the rows of a Parquet file into JSON records.
type parquetReader struct {
	f      *os.File
	size   int64
	format schemas.Format
	next   func() (any, error)
	close  func() error
	n      int64
	total  int64
}

func newParquetReader(f *os.File, want schemas.Format) (*parquetReader, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	pf, err := parquet.OpenFile(f, st.Size())
	if err != nil {
		return nil, fmt.Errorf("not a readable Parquet file: %v", err)
	}
	var cols []string
	for _, fl := range pf.Schema().Fields() {
		cols = append(cols, fl.Name())
	}
	has := func(names []string) bool {
		for _, n := range names {
			found := false
			for _, c := range cols {
				if c == n {
					found = true
				}
			}
			if !found {
				return false
			}
		}
		return true
	}
	format := want
	if format == "" {
		for _, f := range []schemas.Format{schemas.FormatShareGPT, schemas.FormatDPO, schemas.FormatAlpaca} {
			if has(formatColumns[f]) {
				format = f
				break
			}
		}
		if format == "" {
			return nil, fmt.Errorf("columns %v match no format (alpaca needs instruction, output; sharegpt needs conversations; dpo needs prompt, chosen, rejected)", cols)
		}
	} else if !has(formatColumns[format]) {
		return nil, fmt.Errorf("columns %v: format %s needs columns %v", cols, format, formatColumns[format])
	}
	r := &parquetReader{f: f, size: st.Size(), format: format, total: pf.NumRows()}
	switch format {
	case schemas.FormatAlpaca:
		r.next, r.close = genericRows[pqAlpaca](pf)
	case schemas.FormatShareGPT:
		r.next, r.close = genericRows[pqShareGPT](pf)
	case schemas.FormatDPO:
		r.next, r.close = genericRows[pqDPO](pf)
	}
	return r, nil
}

func genericRows[T any](pf *parquet.File) (func() (any, error), func() error) {
	gr := parquet.NewGenericReader[T](pf)
	buf := make([]T, 256)
	var pos, n int
	return func() (any, error) {
		if pos == n {
			var err error
			n, err = gr.Read(buf)
			pos = 0
			if n == 0 {
				if err == nil || errors.Is(err, io.EOF) {
					return nil, io.EOF
				}
				return nil, err
			}
		}
		v := buf[pos]
		pos++
		return v, nil
	}, gr.Close
}

func (p *parquetReader) Next() (Row, error) {
	v, err := p.next()
	if err != nil {
		if err == io.EOF {
			return Row{}, io.EOF
		}
		return Row{}, fmt.Errorf("%w: parquet row %d: %v", ErrSource, p.n+1, err)
	}
	p.n++
	data, err := json.Marshal(pqJSON(v))
	if err != nil {
		return Row{Line: p.n, Rule: "json", Problem: err.Error()}, nil
	}
	return Row{Line: p.n, Data: data}, nil
}

// pqJSON maps a Parquet row to the JSON object the schemas validate (null values omitted).
func pqJSON(v any) map[string]any {
	m := map[string]any{}
	put := func(k string, s *string) {
		if s != nil {
			m[k] = *s
		}
	}
	switch r := v.(type) {
	case pqAlpaca:
		put("instruction", r.Instruction)
		put("input", r.Input)
		put("output", r.Output)
	case pqShareGPT:
		turns := make([]map[string]any, len(r.Conversations))
		for i, t := range r.Conversations {
			tm := map[string]any{}
			if t.From != nil {
				tm["from"] = *t.From
			}
			if t.Value != nil {
				tm["value"] = *t.Value
			}
			turns[i] = tm
		}
		m["conversations"] = turns
	case pqDPO:
		put("prompt", r.Prompt)
		put("chosen", r.Chosen)
		put("rejected", r.Rejected)
	}
	return m
}

func (p *parquetReader) Format() (schemas.Format, bool) { return p.format, true }
func (p *parquetReader) BytesRead() int64 {
	if p.total == 0 {
		return p.size
	}
	return p.size * p.n / p.total
}
func (p *parquetReader) Close() error {
	p.close()
	return p.f.Close()
}
