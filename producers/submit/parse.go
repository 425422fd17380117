package submit

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/schemas"
)

// OpenAI Batch API urls a completion job accepts.
const (
	URLCompletions     = "/v1/completions"
	URLChatCompletions = "/v1/chat/completions"
)

// rowError is why a row becomes an error result.
type rowError struct{ code, msg string }

// parseRow turns one input row (a JSON object) into a request. line is the
// 1-based row number; model is the job's model, kind its kind. It returns the
// custom_id (the line number when the row has none or has an invalid one) and
// either the request or the reason the row is an error row.
func parseRow(data []byte, line int, model, kind string) (string, schemas.Request, *rowError) {
	lineID := strconv.Itoa(line)
	data = bytes.TrimSpace(data)
	var raw map[string]json.RawMessage
	if len(data) == 0 || data[0] != '{' || json.Unmarshal(data, &raw) != nil {
		return lineID, schemas.Request{}, &rowError{schemas.CodeInvalidRequest, "line " + lineID + " is not a JSON object"}
	}
	id := lineID
	if v, ok := raw["custom_id"]; ok && string(v) != "null" {
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			var n json.Number
			if err := json.Unmarshal(v, &n); err != nil {
				return lineID, schemas.Request{}, &rowError{schemas.CodeInvalidRequest, "custom_id must be a string"}
			}
			s = n.String()
		}
		if err := schemas.ValidCustomID(s); err != nil {
			return lineID, schemas.Request{}, &rowError{schemas.CodeInvalidRequest, err.Error()}
		}
		id = s
	}
	body := data
	url := ""
	if b, ok := raw["body"]; ok {
		// An OpenAI Batch API line: {custom_id, method, url, body}.
		var method string
		if m, ok := raw["method"]; ok {
			_ = json.Unmarshal(m, &method)
		}
		if u, ok := raw["url"]; ok {
			_ = json.Unmarshal(u, &url)
		}
		if method != "" && !strings.EqualFold(method, "POST") {
			return id, schemas.Request{}, &rowError{schemas.CodeInvalidRequest, fmt.Sprintf("method %q: only POST", method)}
		}
		if kind == jobs.KindCompletion && url != URLCompletions && url != URLChatCompletions {
			return id, schemas.Request{}, &rowError{schemas.CodeInvalidRequest, fmt.Sprintf("url %q: want %s or %s", url, URLCompletions, URLChatCompletions)}
		}
		body = b
	}
	req := schemas.Request{CustomID: id, Kind: kind, Model: model, Line: line}
	switch kind {
	case jobs.KindScore:
		var s schemas.ScoreInput
		if err := json.Unmarshal(body, &s); err != nil {
			return id, schemas.Request{}, &rowError{schemas.CodeInvalidRequest, "score row: " + err.Error()}
		}
		if err := s.Validate(); err != nil {
			return id, schemas.Request{}, &rowError{schemas.CodeInvalidRequest, err.Error()}
		}
		req.Score = &s
	default:
		c, err := schemas.DecodeCompletionRequest(body)
		if err != nil {
			return id, schemas.Request{}, &rowError{schemas.CodeInvalidRequest, err.Error()}
		}
		switch {
		case c.Model == "" || c.Model == model || c.Model == AutoModel:
			// the job's model, or routed
		case model == AutoModel:
			// A row of an auto job may name its expert.
			if err := jobs.ValidID(c.Model); err != nil {
				return id, schemas.Request{}, &rowError{schemas.CodeInvalidRequest, fmt.Sprintf("model %q: want a name of letters, digits, '-' and '_'", c.Model)}
			}
		default:
			return id, schemas.Request{}, &rowError{schemas.CodeInvalidRequest, fmt.Sprintf("model %q differs from the job's model %q", c.Model, model)}
		}
		if c.Model == "" {
			c.Model = model
		}
		if url == URLChatCompletions && !c.IsChat() {
			return id, schemas.Request{}, &rowError{schemas.CodeInvalidRequest, "a chat completion needs messages"}
		}
		if url == URLCompletions && c.IsChat() {
			return id, schemas.Request{}, &rowError{schemas.CodeInvalidRequest, "a completion takes a prompt, not messages"}
		}
		if err := c.Validate(); err != nil {
			msg, _ := schemas.ValidationMessage(err)
			return id, schemas.Request{}, &rowError{schemas.CodeInvalidRequest, msg}
		}
		c.Stream = false // batch results are whole
		req.Completion = &c
	}
	return id, req, nil
}
