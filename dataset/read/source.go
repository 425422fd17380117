package read

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"

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

// Source yields the rows of one source in order: Open returns one.
type Source interface {
	Next() (Row, error) // io.EOF at the end
	// Format is the format the source itself says (a Parquet file's
	// columns), when it says one.
	Format() (schemas.Format, bool)
	BytesRead() int64 // safe to call while another goroutine calls Next
	Close() error
}

// Source kinds, chosen by the file's extension (stdin: sniffed).
const (
	kindJSONL   = "jsonl"
	kindJSON    = "json"
	kindParquet = "parquet"
)

var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// Open opens path ("-" is stdin: JSONL, or a JSON array when it starts with
// '[') and returns the reader of its rows, chosen by the extension: .parquet
// or .pq (the columns of format, or of the format they match when format is
// ""), .json (one array of records), anything else JSONL with lines of at
// most maxLine bytes. Errors wrap ErrSource.
func Open(path string, stdin io.Reader, maxLine int, format schemas.Format) (Source, error) {
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
	read    atomic.Int64
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
			j.read.Add(total)
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
func (j *jsonlReader) BytesRead() int64               { return j.read.Load() }
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
func (j *jsonArrayReader) BytesRead() int64               { return j.cr.n.Load() }
func (j *jsonArrayReader) Close() error {
	if j.c != nil {
		return j.c.Close()
	}
	return nil
}

type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// formatColumns are the columns a Parquet file needs for each format.
var formatColumns = map[schemas.Format][]string{
	schemas.FormatAlpaca:   {"instruction", "output"},
	schemas.FormatShareGPT: {"conversations"},
	schemas.FormatDPO:      {"prompt", "chosen", "rejected"},
}

// recordColumns are the columns of each format that become a record's JSON;
// other columns are not read into it.
var recordColumns = map[schemas.Format][]string{
	schemas.FormatAlpaca:   {"instruction", "input", "output"},
	schemas.FormatShareGPT: {"conversations"},
	schemas.FormatDPO:      {"prompt", "chosen", "rejected"},
}

// parquetReader turns the rows of a Parquet file into JSON records. Each value
// keeps the kind its column has (an INT64 column gives a JSON number), so that
// validation rejects a column of the wrong type with rule "type" exactly as it
// rejects the same value in JSONL, rather than converting it to a string.
type parquetReader struct {
	f      *os.File
	size   int64
	format schemas.Format
	rows   *parquet.Reader
	n      int64
	done   atomic.Int64 // n, for BytesRead
	total  int64
}

// openParquet opens the Parquet file f and returns it with its size.
func openParquet(f *os.File) (*parquet.File, int64, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	if err := checkParquet(f, st.Size()); err != nil {
		return nil, 0, fmt.Errorf("not a readable Parquet file: %w", err)
	}
	// Rows are read without the page indexes and bloom filters, whose
	// lengths checkParquet does not check.
	pf, err := parquet.OpenFile(f, st.Size(), parquet.SkipPageIndex(true), parquet.SkipBloomFilters(true))
	if err != nil {
		return nil, 0, fmt.Errorf("not a readable Parquet file: %w", err)
	}
	return pf, st.Size(), nil
}

func newParquetReader(f *os.File, want schemas.Format) (*parquetReader, error) {
	pf, size, err := openParquet(f)
	if err != nil {
		return nil, err
	}
	var cols []string
	for _, fl := range pf.Schema().Fields() {
		cols = append(cols, fl.Name())
	}
	has := func(names []string) bool {
		for _, n := range names {
			if !slices.Contains(cols, n) {
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
	return &parquetReader{f: f, size: size, format: format, rows: parquet.NewReader(pf, pf.Schema()), total: pf.NumRows()}, nil
}

func (p *parquetReader) Next() (Row, error) {
	if p.n >= p.total {
		return Row{}, io.EOF
	}
	row := map[string]any{}
	if err := p.rows.Read(&row); err != nil {
		if errors.Is(err, io.EOF) {
			return Row{}, io.EOF
		}
		return Row{}, fmt.Errorf("%w: parquet row %d: %v", ErrSource, p.n+1, err)
	}
	p.n++
	p.done.Store(p.n)
	return Row{Line: p.n, Data: pqRecordJSON(p.format, row)}, nil
}

// pqRecordJSON writes the format's columns of a Parquet row as a JSON object.
// A null value is left out, as absent (Parquet has no other way to say it), in
// the row and in each conversation turn.
func pqRecordJSON(f schemas.Format, row map[string]any) []byte {
	b := []byte{'{'}
	for _, k := range recordColumns[f] {
		v, ok := row[k]
		if !ok || v == nil {
			continue
		}
		if len(b) > 1 {
			b = append(b, ',')
		}
		b = appendJSONString(b, k)
		b = append(b, ':')
		if turns, isList := v.([]any); isList && f == schemas.FormatShareGPT {
			b = appendTurns(b, turns)
			continue
		}
		b = appendJSONValue(b, v)
	}
	return append(b, '}')
}

// appendTurns writes conversation turns with their from and value only.
func appendTurns(b []byte, turns []any) []byte {
	b = append(b, '[')
	for i, t := range turns {
		if i > 0 {
			b = append(b, ',')
		}
		m, ok := t.(map[string]any)
		if !ok {
			b = appendJSONValue(b, t)
			continue
		}
		b = append(b, '{')
		first := true
		for _, k := range []string{"from", "value"} {
			if v := m[k]; v != nil {
				if !first {
					b = append(b, ',')
				}
				first = false
				b = appendJSONString(b, k)
				b = append(b, ':')
				b = appendJSONValue(b, v)
			}
		}
		b = append(b, '}')
	}
	return append(b, ']')
}

// appendJSONValue writes a value parquet-go read as JSON of the same kind:
// strings and byte arrays as strings, numbers as numbers (NaN and infinities,
// which JSON lacks, as null), booleans, lists and groups.
func appendJSONValue(b []byte, v any) []byte {
	switch x := v.(type) {
	case nil:
		return append(b, "null"...)
	case string:
		return appendJSONString(b, x)
	case []byte:
		return appendJSONString(b, string(x))
	case bool:
		return strconv.AppendBool(b, x)
	case float32:
		return appendJSONFloat(b, float64(x), 32)
	case float64:
		return appendJSONFloat(b, x, 64)
	case []any:
		b = append(b, '[')
		for i, e := range x {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONValue(b, e)
		}
		return append(b, ']')
	case map[string]any:
		keys := slices.Sorted(maps.Keys(x))
		b = append(b, '{')
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, k)
			b = append(b, ':')
			b = appendJSONValue(b, x[k])
		}
		return append(b, '}')
	}
	if data, err := json.Marshal(v); err == nil { // integers, and whatever else a column holds
		return append(b, data...)
	}
	return append(b, "null"...)
}

func appendJSONFloat(b []byte, f float64, bits int) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(b, "null"...)
	}
	return strconv.AppendFloat(b, f, 'g', -1, bits)
}

// appendJSONString writes s as a JSON string, escaping quotes, backslashes
// and control characters and copying every other byte as it is: invalid UTF-8
// stays invalid, for validation to reject with rule "utf8" rather than
// silently becoming U+FFFD as encoding/json would write it.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

func (p *parquetReader) Format() (schemas.Format, bool) { return p.format, true }
func (p *parquetReader) BytesRead() int64 {
	if p.total == 0 {
		return p.size
	}
	return p.size * p.done.Load() / p.total
}
func (p *parquetReader) Close() error {
	p.rows.Close()
	return p.f.Close()
}
