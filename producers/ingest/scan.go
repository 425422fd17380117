package ingest

import (
	"context"
	"fmt"
	"io"
	"runtime"

	"github.com/largeforge/largeforge/dataset/read"
	"github.com/largeforge/largeforge/schemas"
)

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
func scan(ctx context.Context, rr read.Source, o scanOptions, emit func(read.Accepted) error, reject func(read.Reject) error) (scanResult, error) {
	res := scanResult{Format: o.format}
	if f, ok := rr.Format(); ok && res.Format == "" {
		res.Format, res.Detected = f, true
	}
	// Auto: buffer the first rows and decide from them.
	var head []read.Row
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
				} else if f, ok := read.OpenAIFormat(row.Data); ok {
					votes[f]++ // OpenAI's chat or preference line
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
				return res, fmt.Errorf("%w: cannot tell the format from the first %d rows (none has the keys of alpaca, sharegpt, dpo or OpenAI's chat or preference formats); name it with --format", read.ErrSource, len(head))
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
		rows []read.Row
		out  chan []read.Item
	}
	jobs := make(chan job, workers)
	order := make(chan chan []read.Item, workers*2)
	for range workers {
		go func() {
			for j := range jobs {
				j.out <- read.Decode(o.source, res.Format, j.rows, o.maxRecord)
			}
		}()
	}

	readErr := make(chan error, 1)
	go func() {
		defer close(order)
		defer close(jobs)
		pending := head
		send := func(rows []read.Row) bool {
			out := make(chan []read.Item, 1)
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
				pending = make([]read.Row, 0, chunk)
			}
		}
		if len(pending) > 0 {
			send(pending)
		}
		readErr <- nil
	}()

	for {
		var out chan []read.Item
		var ok bool
		select { // not blocked on a source that sends nothing once ctx ends
		case out, ok = <-order:
		case <-ctx.Done():
			return res, ctx.Err()
		}
		if !ok {
			break
		}
		var items []read.Item
		select {
		case items = <-out:
		case <-ctx.Done():
			return res, ctx.Err()
		}
		for _, it := range items {
			res.Rows++
			var err error
			if it.Rej != nil {
				err = reject(*it.Rej)
			} else {
				err = emit(it.Acc)
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
