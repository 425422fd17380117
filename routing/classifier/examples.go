package classifier

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strings"
)

// MaxRowBytes is the longest labeled row ReadExamples accepts.
const MaxRowBytes = 1 << 20

// Example is one labeled row: {"prompt": "...", "expert": "code"}.
type Example struct {
	Prompt string `json:"prompt"`
	Expert string `json:"expert"`
}

// ParseExample decodes one labeled row. Its errors wrap ErrInvalidRow
// (without the line; ReadExamples adds it).
func ParseExample(line []byte) (Example, error) {
	var e Example
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		return Example{}, fmt.Errorf("%w: want a JSON object {\"prompt\": ..., \"expert\": ...}: %w", ErrInvalidRow, err)
	}
	if dec.More() {
		return Example{}, fmt.Errorf("%w: more than one JSON value", ErrInvalidRow)
	}
	switch {
	case strings.TrimSpace(e.Prompt) == "":
		return Example{}, fmt.Errorf("%w: prompt is empty", ErrInvalidRow)
	case e.Expert == "":
		return Example{}, fmt.Errorf("%w: expert is empty", ErrInvalidRow)
	case strings.ContainsAny(e.Expert, " \t\r\n.*>"):
		return Example{}, fmt.Errorf("%w: expert %q must not contain whitespace, '.', '*' or '>'", ErrInvalidRow, e.Expert)
	}
	return e, nil
}

// ReadExamples reads JSONL labeled rows; blank lines are skipped. The first
// bad row stops it with an error naming its line ("line 3: ...") and
// wrapping ErrInvalidRow.
func ReadExamples(r io.Reader) ([]Example, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), MaxRowBytes)
	var out []Example
	line := 0
	for sc.Scan() {
		line++
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		e, err := ParseExample(b)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("line %d: %w: %w", line+1, ErrInvalidRow, err)
	}
	return out, nil
}

// LoadExamples reads a JSONL file of labeled rows (see ReadExamples); errors
// name the file and the line.
func LoadExamples(path string) ([]Example, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ex, err := ReadExamples(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return ex, nil
}

// Holdout shuffles examples with seed and holds out the given share (0..1) of
// each expert's rows (at least one row of an expert with two or more) for
// evaluation.
func Holdout(examples []Example, holdout float64, seed uint64) (train, test []Example) {
	byLabel := map[string][]Example{}
	var labels []string
	for _, e := range examples {
		if _, ok := byLabel[e.Expert]; !ok {
			labels = append(labels, e.Expert)
		}
		byLabel[e.Expert] = append(byLabel[e.Expert], e)
	}
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	for _, l := range labels {
		rows := byLabel[l]
		rng.Shuffle(len(rows), func(i, j int) { rows[i], rows[j] = rows[j], rows[i] })
		n := int(holdout*float64(len(rows)) + 0.5)
		if holdout > 0 && n == 0 && len(rows) > 1 {
			n = 1
		}
		n = min(n, len(rows)-1)
		if n < 0 {
			n = 0
		}
		test = append(test, rows[:n]...)
		train = append(train, rows[n:]...)
	}
	return train, test
}
