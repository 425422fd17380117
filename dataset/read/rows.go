package read

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/parquet-go/parquet-go"
)

// Lines reads JSONL with lines of at most max bytes; a longer line is
// skipped and reported as too large, so memory stays bounded. Blank lines
// are rows too (the caller counts them as lines and skips them).
type Lines struct {
	r   *bufio.Reader
	max int
	buf []byte
}

// NewLines reads the lines of r, each of at most max bytes.
func NewLines(r io.Reader, max int) *Lines {
	return &Lines{r: bufio.NewReaderSize(r, 64<<10), max: max}
}

// Next returns the next line without its line end; tooLarge is set (and
// data nil) for a line over the limit. io.EOF at the end.
func (l *Lines) Next() ([]byte, bool, error) {
	l.buf = l.buf[:0]
	tooLarge := false
	for {
		frag, err := l.r.ReadSlice('\n')
		if !tooLarge {
			if len(l.buf)+len(frag) > l.max {
				tooLarge, l.buf = true, l.buf[:0]
			} else {
				l.buf = append(l.buf, frag...)
			}
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil && (err != io.EOF || (len(l.buf) == 0 && !tooLarge)) {
			return nil, false, err
		}
		if tooLarge {
			return nil, true, nil
		}
		return bytes.TrimRight(l.buf, "\r\n"), false, nil
	}
}

// pqMessage is a chat message in a Parquet list column.
type pqMessage struct {
	Role    string `parquet:"role"`
	Content string `parquet:"content"`
}

// pqRow holds every column a Parquet input may have; absent columns read as
// null. The same names as the JSONL keys.
type pqRow struct {
	CustomID    *string     `parquet:"custom_id,optional"`
	Model       *string     `parquet:"model,optional"`
	Prompt      *string     `parquet:"prompt,optional"`
	Messages    []pqMessage `parquet:"messages,list,optional"`
	MaxTokens   *int64      `parquet:"max_tokens,optional"`
	Temperature *float64    `parquet:"temperature,optional"`
	TopP        *float64    `parquet:"top_p,optional"`
	TopK        *int64      `parquet:"top_k,optional"`
	Stop        []string    `parquet:"stop,list,optional"`
	Seed        *int64      `parquet:"seed,optional"`
	Text        *string     `parquet:"text,optional"`
	Completion  *string     `parquet:"completion,optional"`
	Chosen      *string     `parquet:"chosen,optional"`
	Rejected    *string     `parquet:"rejected,optional"`
}

func (r pqRow) json() map[string]any {
	m := map[string]any{}
	put := func(k string, v any, ok bool) {
		if ok {
			m[k] = v
		}
	}
	put("custom_id", deref(r.CustomID), r.CustomID != nil)
	put("model", deref(r.Model), r.Model != nil)
	put("prompt", deref(r.Prompt), r.Prompt != nil)
	put("messages", r.Messages, len(r.Messages) > 0)
	put("max_tokens", derefI(r.MaxTokens), r.MaxTokens != nil)
	put("temperature", derefF(r.Temperature), r.Temperature != nil)
	put("top_p", derefF(r.TopP), r.TopP != nil)
	put("top_k", derefI(r.TopK), r.TopK != nil)
	put("stop", r.Stop, len(r.Stop) > 0)
	put("seed", derefI(r.Seed), r.Seed != nil)
	put("text", deref(r.Text), r.Text != nil)
	put("completion", deref(r.Completion), r.Completion != nil)
	put("chosen", deref(r.Chosen), r.Chosen != nil)
	put("rejected", deref(r.Rejected), r.Rejected != nil)
	return m
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func derefI(v *int64) int64 {
	if v == nil {
		return 0
	}
	return *v
}

func derefF(v *float64) float64 {
	if v == nil {
		return 0
	}
	return *v
}

// RequestParquet reads a batch job's Parquet input (the columns of a §3.1
// request or of a score row, as named in JSONL) 256 rows at a time, each row
// as the JSON object of its non-null columns.
type RequestParquet struct {
	gr   *parquet.GenericReader[pqRow]
	buf  []pqRow
	pos  int
	n    int
	max  int
	done bool
}

var pqKnown = map[string]bool{}

func init() {
	for _, f := range parquet.SchemaOf(pqRow{}).Fields() {
		pqKnown[f.Name()] = true
	}
}

// NewRequestParquet reads f, whose rows' JSON must be at most max bytes. It
// fails when f is no readable Parquet file or has none of the known columns.
func NewRequestParquet(f *os.File, max int) (*RequestParquet, error) {
	pf, _, err := openParquet(f)
	if err != nil {
		return nil, err
	}
	known := 0
	for _, fl := range pf.Schema().Fields() {
		if pqKnown[fl.Name()] {
			known++
		}
	}
	if known == 0 {
		return nil, fmt.Errorf("no known column (custom_id, prompt, messages, text, completion, chosen, rejected, ...)")
	}
	return &RequestParquet{gr: parquet.NewGenericReader[pqRow](pf), buf: make([]pqRow, 256), max: max}, nil
}

// Next returns the next row as JSON; tooLarge is set (and data nil) for a
// row over the limit. io.EOF at the end.
func (p *RequestParquet) Next() ([]byte, bool, error) {
	if p.pos == p.n {
		if p.done {
			return nil, false, io.EOF
		}
		clear(p.buf)
		n, err := p.gr.Read(p.buf)
		p.pos, p.n = 0, n
		if err != nil {
			if !errors.Is(err, io.EOF) {
				return nil, false, err
			}
			p.done = true
		}
		if n == 0 {
			return nil, false, io.EOF
		}
	}
	row := p.buf[p.pos]
	p.pos++
	data, err := json.Marshal(row.json())
	if err != nil {
		return nil, false, err
	}
	if len(data) > p.max {
		return nil, true, nil
	}
	return data, false, nil
}
