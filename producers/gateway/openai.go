package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/largeforge/largeforge/schemas"
)

// The OpenAI request surface the gateway handles before the §3.1 decoding
// (NormalizeRequest): max_completion_tokens is max_tokens; n asks for
// several choices, each its own generation (seed+i when a seed is given, so
// that they differ); stream_options.include_usage adds the final usage chunk;
// a message's content may be a list of text parts (joined with "\n"); the
// developer role is the system role. Parameters the workers cannot honour
// are refused with a 400 naming them, never accepted and ignored.

// MaxChoices is the most choices n may ask for.
const MaxChoices = 16

// ErrUnsupportedParameter is a request parameter the gateway does not
// support (HTTP 400 naming it).
var ErrUnsupportedParameter = errors.New("unsupported parameter")

// ParamError is a request parameter at fault; it matches
// schemas.ErrInvalidRequest, or ErrUnsupportedParameter when Unsupported.
// Code and Msg, when set, are OpenAI's code and message for it (else
// invalid_request or unsupported_parameter, and Reason after the name).
type ParamError struct {
	Param       string
	Reason      string
	Unsupported bool
	Code        string
	Msg         string
}

// code is the error code a response gives for e.
func (e *ParamError) code() string {
	switch {
	case e.Code != "":
		return e.Code
	case e.Unsupported:
		return codeUnsupportedParams
	}
	return codeInvalidRequest
}

func (e *ParamError) Error() string {
	if e.Msg != "" {
		return e.Msg
	}
	if e.Unsupported {
		return fmt.Sprintf("Unsupported parameter: '%s' %s", e.Param, e.Reason)
	}
	return fmt.Sprintf("Invalid parameter: '%s' %s", e.Param, e.Reason)
}

func (e *ParamError) Is(target error) bool {
	return target == schemas.ErrInvalidRequest || (e.Unsupported && target == ErrUnsupportedParameter)
}

// Options are the OpenAI parameters the gateway itself carries out.
type Options struct {
	N            int  // choices (1..MaxChoices)
	IncludeUsage bool // stream_options.include_usage
	// Prompts are the prompts of a completion request whose prompt is a
	// list of strings (nil for one string): N choices each, choice i*N+j
	// the j-th of prompt i; the body holds the first.
	Prompts []string
}

// unsupported names the parameters refused when set to anything but null
// (or, for lists and objects, empty), with the reason.
var unsupported = []struct{ key, reason string }{
	{"tools", "is not supported: the workers do not call tools"},
	{"tool_choice", "is not supported: the workers do not call tools"},
	{"parallel_tool_calls", "is not supported: the workers do not call tools"},
	{"functions", "is not supported: the workers do not call functions"},
	{"function_call", "is not supported: the workers do not call functions"},
	{"audio", "is not supported: the workers generate text only"},
	{"logit_bias", "is not supported by the sampler"},
	{"prediction", "is not supported: no predicted outputs"},
}

// zeroOnly are parameters accepted only at their neutral value.
var zeroOnly = []string{"presence_penalty", "frequency_penalty"}

// neutralOnly are parameters accepted only at their neutral value (compact
// JSON), or null, with the reason another value is refused.
var neutralOnly = []struct{ key, neutral, reason string }{
	{"echo", "false", "is not supported: the response holds the completion only"},
	{"best_of", "1", "is not supported: each choice is a generation of its own (use n)"},
	{"suffix", `""`, "is not supported: the workers do not insert text"},
	{"modalities", `["text"]`, "is not supported: the workers generate text only"},
}

// NormalizeRequest rewrites an OpenAI request body (chat or not) into the
// §3.1 form that schemas.DecodeCompletionRequest reads, and returns the
// options the gateway carries out itself. A body that is not a JSON object
// comes back unchanged (the decoder says why). Errors are *ParamError.
func NormalizeRequest(body []byte, chat bool) ([]byte, Options, error) {
	opts := Options{N: 1}
	var raw map[string]json.RawMessage
	if json.Unmarshal(body, &raw) != nil || raw == nil {
		return body, opts, nil
	}
	if err := checkParams(raw, chat); err != nil {
		return nil, opts, err
	}
	for _, u := range unsupported {
		if v, ok := raw[u.key]; ok && !empty(v) {
			return nil, opts, &ParamError{Param: u.key, Reason: u.reason, Unsupported: true}
		}
	}
	for _, k := range zeroOnly {
		var f float64
		if v, ok := raw[k]; ok && !isNullJSON(v) && (json.Unmarshal(v, &f) != nil || f != 0) {
			return nil, opts, &ParamError{Param: k, Reason: "is not supported by the sampler (only 0)", Unsupported: true}
		}
	}
	for _, p := range neutralOnly {
		var c bytes.Buffer
		if v, ok := raw[p.key]; ok && !isNullJSON(v) && (json.Compact(&c, v) != nil || c.String() != p.neutral) {
			return nil, opts, &ParamError{Param: p.key, Reason: p.reason, Unsupported: true}
		}
	}
	if v, ok := raw["response_format"]; ok && !isNullJSON(v) {
		var rf struct {
			Type string `json:"type"`
		}
		if json.Unmarshal(v, &rf) != nil || rf.Type != "text" {
			return nil, opts, &ParamError{Param: "response_format", Reason: fmt.Sprintf("type %q is not supported (only text)", rf.Type), Unsupported: true}
		}
	}
	if v, ok := raw["max_completion_tokens"]; ok && !isNullJSON(v) {
		if mt, both := raw["max_tokens"]; both && !isNullJSON(mt) && !bytes.Equal(bytes.TrimSpace(mt), bytes.TrimSpace(v)) {
			return nil, opts, &ParamError{Param: "max_completion_tokens", Reason: "and max_tokens differ: give one of them"}
		}
		raw["max_tokens"] = v
	}
	if v, ok := raw["n"]; ok && !isNullJSON(v) {
		if json.Unmarshal(v, &opts.N) != nil || opts.N < 1 || opts.N > MaxChoices {
			return nil, opts, &ParamError{Param: "n", Reason: fmt.Sprintf("must be an integer in [1, %d]", MaxChoices)}
		}
	}
	if v, ok := raw["prompt"]; ok && !chat {
		ps, err := promptList(v, opts.N)
		if err != nil {
			return nil, opts, err
		}
		if ps != nil {
			opts.Prompts = ps
			raw["prompt"], _ = json.Marshal(ps[0])
		}
	}
	if v, ok := raw["stream_options"]; ok && !isNullJSON(v) {
		var so struct {
			IncludeUsage *bool `json:"include_usage"`
		}
		var stream bool
		_ = json.Unmarshal(raw["stream"], &stream)
		switch {
		case json.Unmarshal(v, &so) != nil:
			return nil, opts, &ParamError{Param: "stream_options", Reason: "must be an object {\"include_usage\": bool}"}
		case !stream:
			return nil, opts, &ParamError{Param: "stream_options", Reason: "is only allowed when stream is true"}
		}
		opts.IncludeUsage = so.IncludeUsage != nil && *so.IncludeUsage
	}
	if v, ok := raw["messages"]; ok && chat && !isNullJSON(v) {
		msgs, err := normalizeMessages(v)
		if err != nil {
			return nil, opts, err
		}
		raw["messages"] = msgs
	}
	// What was checked above (the options read into opts, the parameters
	// accepted only at their neutral value) is not passed on.
	for _, k := range []string{"max_completion_tokens", "n", "stream_options", "response_format"} {
		delete(raw, k)
	}
	for _, k := range zeroOnly {
		delete(raw, k)
	}
	for _, p := range neutralOnly {
		delete(raw, p.key)
	}
	out, err := json.Marshal(raw)
	if err != nil {
		return nil, opts, &ParamError{Param: "body", Reason: err.Error()}
	}
	return out, opts, nil
}

// promptList is the prompts of a prompt given as a list of strings (nil for
// anything else, which the decoder reads or refuses): at least one, and n
// choices of each at most MaxChoices in all.
func promptList(v json.RawMessage, n int) ([]string, error) {
	t := bytes.TrimSpace(v)
	if len(t) == 0 || t[0] != '[' {
		return nil, nil
	}
	var ps []string
	if json.Unmarshal(t, &ps) != nil {
		return nil, &ParamError{Param: "prompt", Code: CodeInvalidType,
			Msg: "Invalid type for 'prompt': expected a string or an array of strings (token arrays are not supported), but got " + jsonTypeName(v) + " of other values instead."}
	}
	switch {
	case len(ps) == 0:
		return nil, &ParamError{Param: "prompt", Code: CodeInvalidValue, Msg: "Invalid 'prompt': empty array. Expected an array with minimum length 1."}
	case len(ps)*n > MaxChoices:
		return nil, &ParamError{Param: "prompt", Code: CodeInvalidValue, Msg: fmt.Sprintf(
			"Invalid 'prompt': %d prompts with n %d are %d choices, over the limit of %d.", len(ps), n, len(ps)*n, MaxChoices)}
	}
	return ps, nil
}

// normalizeMessages maps the developer role to system and text content
// parts to a string; other parts and tool calls are refused.
func normalizeMessages(v json.RawMessage) (json.RawMessage, error) {
	var msgs []map[string]json.RawMessage
	if json.Unmarshal(v, &msgs) != nil {
		return v, nil // the decoder says why
	}
	for i, m := range msgs {
		if m == nil {
			continue
		}
		for _, k := range []string{"tool_calls", "function_call"} {
			if tv, ok := m[k]; ok && !empty(tv) {
				return nil, &ParamError{Param: fmt.Sprintf("messages[%d].%s", i, k), Reason: "is not supported: the workers do not call tools", Unsupported: true}
			}
		}
		var role string
		if json.Unmarshal(m["role"], &role) == nil {
			switch role {
			case "developer":
				m["role"] = json.RawMessage(`"system"`)
			case "tool", "function":
				return nil, &ParamError{Param: fmt.Sprintf("messages[%d].role", i), Reason: fmt.Sprintf("%q is not supported: the workers do not call tools", role), Unsupported: true}
			case "system", "user", "assistant":
			default:
				return nil, &ParamError{Param: fmt.Sprintf("messages[%d].role", i), Code: CodeInvalidValue, Msg: fmt.Sprintf(
					"Invalid value: '%s'. Supported values are: 'system', 'developer', 'user' and 'assistant'.", role)}
			}
		}
		c, ok := m["content"]
		if !ok || len(bytes.TrimSpace(c)) == 0 || bytes.TrimSpace(c)[0] != '[' {
			continue
		}
		var parts []struct {
			Type string  `json:"type"`
			Text *string `json:"text"`
		}
		if err := json.Unmarshal(c, &parts); err != nil {
			return nil, &ParamError{Param: fmt.Sprintf("messages[%d].content", i), Reason: "must be a string or a list of content parts"}
		}
		texts := make([]string, len(parts))
		for j, p := range parts {
			if p.Type != "text" || p.Text == nil {
				return nil, &ParamError{Param: fmt.Sprintf("messages[%d].content[%d].type", i, j),
					Reason: fmt.Sprintf("%q is not supported (only text parts with a text)", p.Type), Unsupported: true}
			}
			texts[j] = *p.Text
		}
		m["content"], _ = json.Marshal(strings.Join(texts, "\n"))
	}
	return json.Marshal(msgs)
}

func isNullJSON(v json.RawMessage) bool {
	s := string(bytes.TrimSpace(v))
	return s == "" || s == "null"
}

// empty reports null, [], {} or "" (a parameter set to nothing).
func empty(v json.RawMessage) bool {
	switch string(bytes.TrimSpace(v)) {
	case "", "null", "[]", "{}", `""`:
		return true
	}
	return false
}
