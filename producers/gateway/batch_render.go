package gateway

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/largeforge/largeforge/schemas"
)

// The lines of a batch's output and error files, as OpenAI writes them:
//
//	{"id":"batch_req_…","custom_id":"…","response":{"status_code":200,"request_id":"…","body":{chat.completion or text_completion}},"error":null}
//	{"id":"batch_req_…","custom_id":"…","response":{"status_code":400,"request_id":"…","body":{"error":{"message","type","param","code"}}},"error":null}
//
// A request the workers gave up on (dead-lettered) has no HTTP response:
// "response":null and "error":{"code","message"}. A chat body has the id
// chatcmpl-…, object chat.completion and choices {index, message,
// logprobs, finish_reason} (no text); a completion body has cmpl-…,
// text_completion and choices {text, index, logprobs, finish_reason}.

// openAILine is one line of an OpenAI batch output or error file.
type openAILine struct {
	ID       string               `json:"id"`
	CustomID string               `json:"custom_id"`
	Response *openAIResponse      `json:"response"`
	Error    *schemas.ResultError `json:"error"`
}

type openAIResponse struct {
	StatusCode int             `json:"status_code"`
	RequestID  string          `json:"request_id"`
	Body       json.RawMessage `json:"body"`
}

// renderLines reads the results sink's output.jsonl (or errors.jsonl) from
// r and writes the successful lines (ok) or the failed ones in OpenAI's
// line format.
func renderLines(w io.Writer, r io.Reader, ok bool) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	bw := bufio.NewWriterSize(w, 64<<10)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	for n := 1; sc.Scan(); n++ {
		if len(strings.TrimSpace(sc.Text())) == 0 {
			continue
		}
		var in schemas.OutputLine
		if err := json.Unmarshal(sc.Bytes(), &in); err != nil {
			return fmt.Errorf("results line %d: %w", n, err)
		}
		if (in.Error == nil) != ok {
			continue
		}
		out, err := openAILineOf(in)
		if err != nil {
			return fmt.Errorf("results line %d: %w", n, err)
		}
		if err := enc.Encode(out); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return bw.Flush()
}

// openAILineOf reshapes one line of the sink's files.
func openAILineOf(in schemas.OutputLine) (openAILine, error) {
	out := openAILine{ID: in.ID, CustomID: in.CustomID}
	reqID := ""
	if in.Response != nil {
		reqID = in.Response.RequestID
	}
	if in.Error != nil {
		if in.Response == nil || in.Response.StatusCode >= 500 || in.Error.Code == schemas.CodeDeadLetter {
			out.Error = &schemas.ResultError{Code: in.Error.Code, Message: in.Error.Message}
			return out, nil
		}
		code := in.Error.Code
		e := apiError{Message: in.Error.Message, Type: "invalid_request_error", Code: &code}
		if p := paramOfMessage(in.Error.Message); p != "" {
			e.Param = &p
		}
		body, _ := json.Marshal(map[string]apiError{"error": e})
		out.Response = &openAIResponse{StatusCode: in.Response.StatusCode, RequestID: reqID, Body: body}
		return out, nil
	}
	if in.Response == nil {
		return out, fmt.Errorf("custom_id %q: no response and no error", in.CustomID)
	}
	body, err := openAIBody(in.Response.Body)
	if err != nil {
		return out, fmt.Errorf("custom_id %q: %w", in.CustomID, err)
	}
	out.Response = &openAIResponse{StatusCode: in.Response.StatusCode, RequestID: reqID, Body: body}
	return out, nil
}

// openAIBody reshapes a completion body: a body whose choices carry a
// message is a chat completion (id chatcmpl-, object chat.completion, no
// text in a choice), else a text completion (no message in a choice).
// Other bodies (a score) pass unchanged.
func openAIBody(raw json.RawMessage) (json.RawMessage, error) {
	var body map[string]json.RawMessage
	if err := json.Unmarshal(raw, &body); err != nil {
		return nil, fmt.Errorf("response body: %w", err)
	}
	var choices []map[string]json.RawMessage
	if c, ok := body["choices"]; !ok || json.Unmarshal(c, &choices) != nil {
		return raw, nil
	}
	chat := false
	for _, c := range choices {
		if m, ok := c["message"]; ok && string(m) != "null" {
			chat = true
		}
	}
	var id string
	_ = json.Unmarshal(body["id"], &id)
	for _, c := range choices {
		if chat {
			delete(c, "text")
		} else {
			delete(c, "message")
		}
	}
	object := "text_completion"
	if chat {
		object = "chat.completion"
		if rest, ok := strings.CutPrefix(id, "cmpl-"); ok {
			id = "chatcmpl-" + rest
		} else if !strings.HasPrefix(id, "chatcmpl-") {
			id = "chatcmpl-" + id
		}
	}
	body["id"], _ = json.Marshal(id)
	body["object"], _ = json.Marshal(object)
	body["choices"], _ = json.Marshal(choices)
	return json.Marshal(body)
}

// paramOfMessage is the parameter a worker's refusal names (a line's error
// carries its message alone): a limit's "Invalid <param>: ..." (the
// §7.1 form of schemas.LimitError: max_tokens over the model's context),
// or the field of a dictionary message; "" for other messages.
func paramOfMessage(msg string) string {
	for _, s := range []error{schemas.ErrModelNameRequired, schemas.ErrInvalidModelPath, schemas.ErrPromptTooLong,
		schemas.ErrInvalidMaxTokens, schemas.ErrTemperatureOutOfRange} {
		if msg == s.Error() || strings.HasPrefix(msg, s.Error()+":") {
			_, p := schemas.ValidationMessage(s)
			return p
		}
	}
	if rest, ok := strings.CutPrefix(msg, "Invalid "); ok {
		if p, _, ok := strings.Cut(rest, ": "); ok && p != "" && !strings.ContainsAny(p, " '\"") {
			return p
		}
	}
	return ""
}
