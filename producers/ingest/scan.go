package ingest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"runtime"

	"github.com/largeforge/largeforge/schemas"
)

// Reject is one record that failed: where it came from, which field broke which
// rule, the message, and the original bytes.
type Reject struct {
	Source   string `json:"source"`
	Line     int64  `json:"line"`
	Field    string `json:"field"`
	Rule     string `json:"rule"`
	Error    string `json:"error"`
	Original []byte `json:"-"`
}

// Accepted is one validated record with its id, canonical size and the bytes
// it was read from.
type Accepted struct {
	Line     int64
	Record   schemas.Record
	ID       string
	Size     int
	Original []byte
}

// Rules of rejects that are not the schema's (schemas.ValidationError has those).
const (
	// RuleFormat: the record is not of the dataset's format (or its format
	// cannot be told).
	RuleFormat = "format"
	// RuleMaxRecordBytes: the record's canonical JSON is larger than one
	// shard may be, so it cannot travel on the bus under max_payload.
	RuleMaxRecordBytes = "maxRecordBytes"
)

// item is what the decoding workers return for one row, in input order.
type item struct {
	acc Accepted
	rej *Reject
}

// autoSample is how many rows `auto` looks at to decide the format.
const autoSample = 16

// scanOptions configure a scan.
type scanOptions struct {
	source    string
	format    schemas.Format // "" = auto
	maxRecord int            // largest canonical record in bytes (0: no limit)
	workers   int
	chunk     int
}

// scanResult is what scan reports besides the records.
type scanResult struct {
	Format   schemas.Format
	Detected bool // the format was chosen by auto-detection
	Rows     int64
	Bytes    int64
}

// scan reads every row of rr, decodes and validates rows on several goroutines, and
// calls emit for each accepted record and reject for each rejected one, in input order.
func scan(ctx context.Context, rr rowReader, o scanOptions, emit func(Accepted) error, reject func(Reject) error) (scanResult, error) {
	res := scanResult{Format: o.format}
	if f, ok := rr.Format(); ok && res.Format == "" {
		res.Format, res.Detected = f, true
	}
	// Auto: buffer the first rows and decide from them.
	var head []Row
	if res.Format == "" {
		votes := map[schemas.Format]int{}
		for len(head) < autoSample {
			row, err := rr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				return res, err
			}
			head = append(head, row)
			if row.Rule == "" {
				if f, ok := schemas.DetectFormat(row.Data); ok {
					votes[f]++
				}
			}
		}
		best := 0
		for _, f := range schemas.Formats() {
			if votes[f] > best {
				res.Format, best = f, votes[f]
			}
		}
		if res.Format == "" {
			if len(head) == 0 {
				res.Format = schemas.FormatAlpaca // empty input: nothing to decide
			} else {
				return res, fmt.Errorf("%w: cannot tell the format from the first %d rows (none has the keys of alpaca, sharegpt or dpo); name it with --format", ErrSource, len(head))
			}
		}
		res.Detected = true
	}

	workers, chunk := o.workers, o.chunk
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	if chunk <= 0 {
		chunk = 256
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	type job struct {
		rows []Row
		out  chan []item
	}
	jobs := make(chan job, workers)
	order := make(chan chan []item, workers*2)
	for range workers {
		go func() {
			for j := range jobs {
				j.out <- decodeRows(o.source, res.Format, j.rows, o.maxRecord)
			}
		}()
	}

	readErr := make(chan error, 1)
	go func() {
		defer close(order)
		defer close(jobs)
		pending := head
		send := func(rows []Row) bool {
			out := make(chan []item, 1)
			select {
			case order <- out:
			case <-ctx.Done():
				return false
			}
			select {
			case jobs <- job{rows: rows, out: out}:
				return true
			case <-ctx.Done():
				return false
			}
		}
		for {
			row, err := rr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				readErr <- err
				return
			}
			pending = append(pending, row)
			if len(pending) >= chunk {
				if !send(pending) {
					return
				}
				pending = make([]Row, 0, chunk)
			}
		}
		if len(pending) > 0 {
			send(pending)
		}
		readErr <- nil
	}()

	for out := range order {
		var items []item
		select {
		case items = <-out:
		case <-ctx.Done():
			return res, ctx.Err()
		}
		for _, it := range items {
			res.Rows++
			var err error
			if it.rej != nil {
				err = reject(*it.rej)
			} else {
				err = emit(it.acc)
			}
			if err != nil {
				return res, err
			}
		}
		res.Bytes = rr.BytesRead()
	}
	if err := <-readErr; err != nil {
		return res, err
	}
	res.Bytes = rr.BytesRead()
	return res, ctx.Err()
}

// decodeRows validates a chunk of rows; a record whose canonical JSON is over
// maxRecord bytes (when > 0) is rejected with RuleMaxRecordBytes.
func decodeRows(source string, f schemas.Format, rows []Row, maxRecord int) []item {
	items := make([]item, len(rows))
	for i, row := range rows {
		if row.Rule != "" {
			items[i].rej = &Reject{Source: source, Line: row.Line, Rule: row.Rule,
				Error: fmt.Sprintf("line %d: %s: %s", row.Line, row.Rule, row.Problem), Original: row.Data}
			continue
		}
		rec, err := schemas.DecodeRecord(f, row.Data)
		if err != nil {
			items[i].rej = rejectFor(source, row, err)
			continue
		}
		canon := rec.CanonicalJSON()
		if maxRecord > 0 && len(canon) > maxRecord {
			field := largestField(rec)
			items[i].rej = &Reject{Source: source, Line: row.Line, Field: field, Rule: RuleMaxRecordBytes, Original: row.Data,
				Error: fmt.Sprintf("line %d: field %q: %s: the record is %d bytes (canonical JSON), over the %d bytes one shard may carry under the server's max_payload",
					row.Line, field, RuleMaxRecordBytes, len(canon), maxRecord)}
			continue
		}
		items[i].acc = Accepted{Line: row.Line, Record: rec, ID: recordID(canon), Size: len(canon), Original: row.Data}
	}
	return items
}

// largestField names the field that makes a record large: the longest string
// of an alpaca or dpo record, the conversation of a sharegpt one.
func largestField(r schemas.Record) string {
	var names, values []string
	switch r.Format {
	case schemas.FormatAlpaca:
		names, values = []string{"instruction", "input", "output"}, []string{r.Alpaca.Instruction, r.Alpaca.Input, r.Alpaca.Output}
	case schemas.FormatDPO:
		names, values = []string{"prompt", "chosen", "rejected"}, []string{r.DPO.Prompt, r.DPO.Chosen, r.DPO.Rejected}
	default:
		return "conversations"
	}
	best := 0
	for i := range values {
		if len(values[i]) > len(values[best]) {
			best = i
		}
	}
	return names[best]
}

func rejectFor(source string, row Row, err error) *Reject {
	r := &Reject{Source: source, Line: row.Line, Rule: "invalid", Error: err.Error(), Original: row.Data}
	var ve *schemas.ValidationError
	if errors.As(err, &ve) {
		r.Field, r.Rule, r.Error = ve.Field, ve.Rule, ve.Message
	}
	return r
}

// recordID is Record.ID computed from canonical bytes already at hand.
func recordID(canon []byte) string {
	sum := sha256.Sum256(canon)
	return hex.EncodeToString(sum[:])
}
