package logging

import (
	"bytes"
	"encoding/json"
	"io"
	"sync"
)

// topLevel are the §6.1 fields that stay at the top of a log line, in order.
var topLevel = []string{"timestamp", "level", "logger", "message", "request_id", "trace_id"}

// shapeWriter rewrites each JSON log line into exactly the §6.1 shape: the
// top-level fields in the dictionary's order, and every other field a
// component added (stream, subject, error, ...) moved into "context". A key
// written twice keeps its last value. Lines that are not JSON objects pass
// through unchanged.
type shapeWriter struct {
	mu  sync.Mutex
	out io.Writer
}

func (w *shapeWriter) Write(p []byte) (int, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(p, &fields); err != nil {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.out.Write(p)
	}
	var buf bytes.Buffer
	buf.WriteByte('{')
	first := true
	put := func(k string, v []byte) {
		if !first {
			buf.WriteByte(',')
		}
		first = false
		kb, _ := json.Marshal(k)
		buf.Write(kb)
		buf.WriteByte(':')
		buf.Write(v)
	}
	for _, k := range topLevel {
		if v, ok := fields[k]; ok {
			put(k, v)
			delete(fields, k)
		}
	}
	ctx := map[string]json.RawMessage{}
	if raw, ok := fields["context"]; ok {
		_ = json.Unmarshal(raw, &ctx)
		delete(fields, "context")
	}
	for k, v := range fields {
		ctx[k] = v
	}
	if len(ctx) > 0 {
		cb, err := json.Marshal(ctx) // keys sorted
		if err == nil {
			put("context", cb)
		}
	}
	buf.WriteString("}\n")
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, err := w.out.Write(buf.Bytes()); err != nil {
		return 0, err
	}
	return len(p), nil
}
