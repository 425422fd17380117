package schemas

import (
	"bytes"
	"encoding/json"
	"strconv"
)

// AppendJSON appends r's JSON encoding, what json.Marshal(r) encodes (its
// strings escaped canonically, as a Record's, not for HTML), without
// reading the encoded bodies again: Response and Score are taken as they
// are (NewResult encoded them with json.Marshal, compact and valid, where
// json.Marshal(r) would check and compact them once more). A body that is
// not valid JSON makes invalid JSON, which DecodeResult refuses.
func (r Result) AppendJSON(b []byte) []byte {
	b = append(b, `{"job":`...)
	b = appendJSONString(b, r.Job)
	b = appendStringField(b, "custom_id", r.CustomID)
	b = appendStringField(b, "model", r.Model)
	b = appendStringField(b, "kind", r.Kind)
	if r.Line != 0 {
		b = append(b, `,"line":`...)
		b = strconv.AppendInt(b, int64(r.Line), 10)
	}
	b = appendRawField(b, "response", r.Response)
	b = appendRawField(b, "score", r.Score)
	if r.Error != nil {
		b = append(b, `,"error":{"code":`...)
		b = appendJSONString(b, r.Error.Code)
		b = append(b, `,"message":`...)
		b = appendJSONString(b, r.Error.Message)
		b = append(b, '}')
	}
	if r.LatencyMS != 0 {
		b = append(b, `,"latency_ms":`...)
		b = appendJSONFloat(b, r.LatencyMS)
	}
	b = appendStringField(b, "worker", r.Worker)
	b = appendStringField(b, "control", r.Control)
	return append(b, '}')
}

// appendStringField appends ,"name":"v" unless v is empty (omitempty).
func appendStringField(b []byte, name, v string) []byte {
	if v == "" {
		return b
	}
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return appendJSONString(b, v)
}

// appendRawField appends ,"name":v unless v is empty (omitempty).
func appendRawField(b []byte, name string, v json.RawMessage) []byte {
	if len(v) == 0 {
		return b
	}
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return appendRaw(b, v)
}

// appendRaw appends an encoded JSON value, compacted when it holds a line
// break (between tokens: a JSON string holds none), so that it stays on
// one line of a JSONL file whoever encoded it.
func appendRaw(b []byte, v json.RawMessage) []byte {
	if bytes.IndexAny(v, "\r\n") < 0 {
		return append(b, v...)
	}
	buf := bytes.NewBuffer(b)
	if err := json.Compact(buf, v); err != nil {
		return append(b, v...) // not JSON: the reader says so
	}
	return buf.Bytes()
}

// appendJSONFloat appends f as encoding/json writes a float64.
func appendJSONFloat(b []byte, f float64) []byte {
	abs := f
	if abs < 0 {
		abs = -abs
	}
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		b = strconv.AppendFloat(b, f, 'e', -1, 64)
		// clean up e-09 to e-9, as encoding/json does
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
		return b
	}
	return strconv.AppendFloat(b, f, 'f', -1, 64)
}

// AppendJSON appends l's JSON encoding, what json.Marshal(l) encodes (its
// strings escaped canonically), the response body taken as it is (see
// Result.AppendJSON), and a newline: one line of output.jsonl.
func (l OutputLine) AppendJSON(b []byte) []byte {
	b = append(b, `{"id":`...)
	b = appendJSONString(b, l.ID)
	b = append(b, `,"custom_id":`...)
	b = appendJSONString(b, l.CustomID)
	b = append(b, `,"response":`...)
	if r := l.Response; r == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, `{"status_code":`...)
		b = strconv.AppendInt(b, int64(r.StatusCode), 10)
		b = append(b, `,"request_id":`...)
		b = appendJSONString(b, r.RequestID)
		b = append(b, `,"body":`...)
		if len(r.Body) == 0 {
			b = append(b, "null"...)
		} else {
			b = appendRaw(b, r.Body)
		}
		b = append(b, '}')
	}
	b = append(b, `,"error":`...)
	if e := l.Error; e == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, `{"code":`...)
		b = appendJSONString(b, e.Code)
		b = append(b, `,"message":`...)
		b = appendJSONString(b, e.Message)
		b = append(b, '}')
	}
	return append(b, '}', '\n')
}
