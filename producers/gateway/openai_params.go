package gateway

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/largeforge/largeforge/schemas"
)

// The top-level parameters of a chat or text completion request, checked
// before NormalizeRequest rewrites the body, with OpenAI's error codes and
// messages, each naming its parameter:
//
//   - a field neither API knows: 400 unknown_parameter, "Unrecognized request
//     argument supplied: foo" (as /v1/batches and /v1/fine_tuning/jobs);
//   - a value of the wrong JSON type: invalid_type ("Invalid type for 'seed':
//     expected an integer, but got a decimal number instead.");
//   - stop over MaxStop sequences: array_above_max_length;
//   - top_logprobs over MaxTopLogprobs: integer_above_max_value; top_logprobs
//     without logprobs: invalid_value.
//
// Parameters OpenAI's clients send that change nothing here are accepted,
// each for a stated reason, never silently changing what is generated:
//
//   - user: an end-user id OpenAI keeps for abuse monitoring; accepted, no
//     effect (a string).
//   - metadata: tags of a stored completion; accepted, no effect (an object
//     of strings).
//   - store: false or null accepted (nothing is stored either way); true asks
//     to store the completion for OpenAI's evals and distillation, which the
//     gateway does not do: 400 unsupported_parameter.
//   - service_tier: "auto" or "default" accepted (the gateway has one tier);
//     "flex", "priority" and others: 400 unsupported_parameter.

// MaxStop is the most stop sequences a request may give (OpenAI's limit).
const MaxStop = 4

// OpenAI's error codes of a refused parameter.
const (
	CodeUnknownParameter  = "unknown_parameter"
	CodeMissingParameter  = "missing_required_parameter"
	CodeInvalidType       = "invalid_type"
	CodeInvalidValue      = "invalid_value"
	codeArrayTooLong      = "array_above_max_length"
	codeIntegerAboveMax   = "integer_above_max_value"
	codeInvalidRequest    = "invalid_request"
	codeUnsupportedParams = "unsupported_parameter"
)

// unknownParam is the refusal of a field the API does not have.
func unknownParam(name string) *ParamError {
	return &ParamError{Param: name, Code: CodeUnknownParameter, Msg: "Unrecognized request argument supplied: " + name}
}

// missingParam is the refusal of a request without a required field: the
// same code and words on every API of the gateway.
func missingParam(name string) *ParamError {
	return &ParamError{Param: name, Code: CodeMissingParameter, Msg: fmt.Sprintf("Missing required parameter: '%s'.", name)}
}

// writeParamError writes e as OpenAI's 400 invalid_request_error.
func writeParamError(w http.ResponseWriter, e *ParamError) {
	writeError(w, http.StatusBadRequest, "invalid_request_error", e.Param, e.code(), e.Error())
}

// unknownField is the field a json.Decoder with DisallowUnknownFields
// refused, if that is what err says.
func unknownField(err error) (string, bool) {
	f, ok := strings.CutPrefix(err.Error(), "json: unknown field ")
	return strings.Trim(f, `"`), ok
}

// paramKind is the JSON type a parameter takes.
type paramKind int

const (
	kindAny     paramKind = iota // checked elsewhere (or by the decoder)
	kindString                   // a string
	kindInt                      // an integer
	kindNumber                   // a number
	kindBool                     // true or false
	kindStrings                  // an object of strings (metadata)
)

// commonParams are the parameters of both APIs, chatParams and
// completionParams those of one.
var (
	commonParams = map[string]paramKind{
		"model": kindString, "max_tokens": kindInt, "temperature": kindNumber, "top_p": kindNumber,
		"top_k": kindInt, "stop": kindAny, "stream": kindBool, "stream_options": kindAny, "seed": kindInt,
		"top_logprobs": kindInt, "n": kindInt, "presence_penalty": kindNumber, "frequency_penalty": kindNumber,
		"logit_bias": kindAny, "user": kindString,
	}
	chatParams = map[string]paramKind{
		"messages": kindAny, "logprobs": kindBool, "max_completion_tokens": kindInt, "response_format": kindAny,
		"tools": kindAny, "tool_choice": kindAny, "parallel_tool_calls": kindAny, "functions": kindAny,
		"function_call": kindAny, "audio": kindAny, "prediction": kindAny, "modalities": kindAny,
		"store": kindBool, "metadata": kindStrings, "service_tier": kindString,
		"reasoning_effort": kindAny, "verbosity": kindAny, "web_search_options": kindAny,
	}
	completionParams = map[string]paramKind{
		"prompt": kindAny, "logprobs": kindAny, "echo": kindBool, "best_of": kindInt, "suffix": kindAny,
	}
)

// refusedChat are chat parameters refused with any value but null (even
// {}, which still asks for the feature).
var refusedChat = []struct{ key, reason string }{
	{"reasoning_effort", "is not supported: the models do not reason before they answer"},
	{"verbosity", "is not supported: the models take no verbosity"},
	{"web_search_options", "is not supported: the workers do not search the web"},
}

// checkParams refuses the unknown fields of raw, values of the wrong type
// and the limits above (a *ParamError).
func checkParams(raw map[string]json.RawMessage, chat bool) error {
	own := completionParams
	if chat {
		own = chatParams
	}
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		kind, ok := own[k]
		if !ok {
			if kind, ok = commonParams[k]; !ok {
				return unknownParam(k)
			}
		}
		if err := checkKind(k, kind, raw[k]); err != nil {
			return err
		}
	}
	if v, ok := raw["stop"]; ok && !isNullJSON(v) {
		var list []json.RawMessage
		if json.Unmarshal(v, &list) == nil && len(list) > MaxStop {
			return &ParamError{Param: "stop", Code: codeArrayTooLong, Msg: fmt.Sprintf(
				"Invalid 'stop': array too long. Expected an array with maximum length %d, but got an array with length %d instead.", MaxStop, len(list))}
		}
	}
	if chat {
		if err := checkTopLogprobs(raw); err != nil {
			return err
		}
	}
	for _, u := range refusedChat {
		if v, ok := raw[u.key]; ok && chat && !isNullJSON(v) {
			return &ParamError{Param: u.key, Reason: u.reason, Unsupported: true}
		}
	}
	if v, ok := raw["store"]; ok && string(bytes.TrimSpace(v)) == "true" {
		return &ParamError{Param: "store", Reason: "true is not supported: the gateway does not store completions", Unsupported: true}
	}
	var tier string
	if v, ok := raw["service_tier"]; ok && json.Unmarshal(v, &tier) == nil && tier != "auto" && tier != "default" {
		return &ParamError{Param: "service_tier", Reason: fmt.Sprintf("%q is not supported: the gateway has one tier (auto or default)", tier), Unsupported: true}
	}
	return nil
}

// checkTopLogprobs checks a chat request's top_logprobs against its
// logprobs and MaxTopLogprobs.
func checkTopLogprobs(raw map[string]json.RawMessage) error {
	var top int
	if v, ok := raw["top_logprobs"]; !ok || isNullJSON(v) || json.Unmarshal(v, &top) != nil {
		return nil
	}
	var lp bool
	_ = json.Unmarshal(raw["logprobs"], &lp)
	switch {
	case top > schemas.MaxTopLogprobs:
		return &ParamError{Param: "top_logprobs", Code: codeIntegerAboveMax, Msg: fmt.Sprintf(
			"Invalid 'top_logprobs': integer above maximum value. Expected a value <= %d, but got %d instead.", schemas.MaxTopLogprobs, top)}
	case top < 0:
		return &ParamError{Param: "top_logprobs", Code: CodeInvalidValue, Msg: fmt.Sprintf(
			"Invalid 'top_logprobs': integer below minimum value. Expected a value >= 0, but got %d instead.", top)}
	case !lp:
		return &ParamError{Param: "top_logprobs", Code: CodeInvalidValue, Msg: "Invalid value for 'top_logprobs': 'logprobs' must be true when 'top_logprobs' is given."}
	}
	return nil
}

// checkKind refuses v (the value of parameter k) unless it is null or of
// kind.
func checkKind(k string, kind paramKind, v json.RawMessage) error {
	if kind == kindAny || isNullJSON(v) {
		return nil
	}
	var ok bool
	var want string
	switch kind {
	case kindString:
		var s string
		ok, want = json.Unmarshal(v, &s) == nil, "a string"
	case kindInt:
		var n int64
		ok, want = json.Unmarshal(v, &n) == nil, "an integer"
	case kindNumber:
		var f float64
		ok, want = json.Unmarshal(v, &f) == nil, "a decimal"
	case kindBool:
		var b bool
		ok, want = json.Unmarshal(v, &b) == nil, "a boolean"
	case kindStrings:
		var m map[string]string
		ok, want = json.Unmarshal(v, &m) == nil, "an object of strings"
	}
	if ok {
		return nil
	}
	return &ParamError{Param: k, Code: CodeInvalidType, Msg: fmt.Sprintf("Invalid type for '%s': expected %s, but got %s instead.", k, want, jsonTypeName(v))}
}

// jsonTypeName names the JSON type of v as OpenAI's messages do.
func jsonTypeName(v json.RawMessage) string {
	s := bytes.TrimSpace(v)
	switch {
	case len(s) == 0:
		return "nothing"
	case s[0] == '"':
		return "a string"
	case s[0] == '{':
		return "an object"
	case s[0] == '[':
		return "an array"
	case s[0] == 't' || s[0] == 'f':
		return "a boolean"
	case bytes.ContainsAny(s, ".eE"):
		return "a decimal number"
	}
	return "an integer"
}

// checkRequest checks a decoded request against its API (chat or not): the
// required messages or prompt (missingParam), each of Prompts, then §7.1.
func checkRequest(req schemas.CompletionRequest, opts Options, chat bool) error {
	switch {
	case chat && req.Prompt != "":
		return unknownParam("prompt")
	case chat && len(req.Messages) == 0:
		return missingParam("messages")
	case !chat && len(req.Messages) > 0:
		return unknownParam("messages")
	case !chat && req.Prompt == "":
		return missingParam("prompt")
	}
	for i, p := range opts.Prompts {
		r := req
		r.Prompt = p
		if err := r.Validate(); err != nil {
			if p == "" {
				return &ParamError{Param: fmt.Sprintf("prompt[%d]", i), Code: CodeInvalidValue, Msg: fmt.Sprintf("Invalid 'prompt[%d]': empty string.", i)}
			}
			return err
		}
	}
	return req.Validate()
}
