package schemas_test

import (
	"encoding/json"
	"math"
	"reflect"
	"testing"

	"github.com/largeforge/largeforge/schemas"
)

// AppendJSON encodes what json.Marshal encodes: the same Result decodes
// from both, for every field, the strings JSON escapes and the floats
// encoding/json writes with an exponent.
func TestResultAppendJSON(t *testing.T) {
	// A body as NewResult encodes it (json.Marshal: HTML escaped, compact).
	body, err := json.Marshal(schemas.CompletionResponse{ID: "cmpl-1", Choices: []schemas.Choice{{Text: "a <b> & \"c\"\n"}}})
	if err != nil {
		t.Fatal(err)
	}
	odd := "tab\t nl\n cr\r quote\" back\\ ctl\x01\x1f html<>& bad\xff\xfe ls\u2028 ps\u2029 émoji 🙂 \b\f"
	for _, tc := range []struct {
		name string
		r    schemas.Result
	}{
		{"empty", schemas.Result{}},
		{"completion", schemas.Result{Job: "batch_1", CustomID: "c-1", Model: "m", Kind: schemas.KindCompletion, Line: 7, Response: body, LatencyMS: 12.345, Worker: "w1"}},
		{"score", schemas.Result{Job: "j", CustomID: "s", Kind: schemas.KindScore, Score: json.RawMessage(`{"sum_logprob":-1.5}`)}},
		{"error", schemas.Result{Job: "j", CustomID: odd, Kind: schemas.KindCompletion, Line: -3, Error: &schemas.ResultError{Code: schemas.CodeModelError, Message: odd}}},
		{"control", schemas.Result{Job: "j", Control: "end"}},
		{"tiny latency", schemas.Result{Job: "j", LatencyMS: 1.5e-9}},
		{"huge latency", schemas.Result{Job: "j", LatencyMS: 3e21}},
		{"negative latency", schemas.Result{Job: "j", LatencyMS: -0.25}},
		{"whole latency", schemas.Result{Job: "j", LatencyMS: 100}},
		{"max float", schemas.Result{Job: "j", LatencyMS: math.MaxFloat64}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want, err := json.Marshal(tc.r)
			if err != nil {
				t.Fatal(err)
			}
			got := tc.r.AppendJSON(nil)
			var a, b schemas.Result
			if err := json.Unmarshal(got, &a); err != nil {
				t.Fatalf("%s: %v", got, err)
			}
			if err := json.Unmarshal(want, &b); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(a, b) {
				t.Errorf("AppendJSON\n got %s\nwant %s", got, want)
			}
			if tc.r.Error == nil && string(got) != string(want) { // no string to escape differently
				t.Errorf("AppendJSON\n got %s\nwant %s", got, want)
			}
		})
	}
}

// OutputLine.AppendJSON encodes what json.Marshal encodes, and a newline.
func TestOutputLineAppendJSON(t *testing.T) {
	body, err := json.Marshal(schemas.CompletionResponse{ID: "cmpl-1", Choices: []schemas.Choice{{Text: "a <b> & \"c\"\n"}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		l    schemas.OutputLine
	}{
		{"empty", schemas.OutputLine{}},
		{"ok", schemas.OutputLine{ID: "batch_req_1", CustomID: "c-1", Response: &schemas.OutputResponse{StatusCode: 200, RequestID: "req_1", Body: body}}},
		{"no body", schemas.OutputLine{ID: "batch_req_1", CustomID: "c-1", Response: &schemas.OutputResponse{StatusCode: 200, RequestID: "req_1"}}},
		{"body on lines", schemas.OutputLine{ID: "batch_req_3", CustomID: "c-3", Response: &schemas.OutputResponse{StatusCode: 200, RequestID: "req_3", Body: json.RawMessage("{\n  \"id\": \"x\",\r\n  \"n\": [1, 2]\n}")}}},
		{"error", schemas.OutputLine{ID: "batch_req_2", CustomID: "c\t2", Response: &schemas.OutputResponse{StatusCode: 400, RequestID: "req_2", Body: json.RawMessage(`{"error":{"code":"x","message":"y"}}`)},
			Error: &schemas.ResultError{Code: "invalid_request", Message: "temperature out of range\n"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want, err := json.Marshal(tc.l)
			if err != nil {
				t.Fatal(err)
			}
			if got := tc.l.AppendJSON(nil); string(got) != string(want)+"\n" {
				t.Errorf("AppendJSON\n got %s\nwant %s", got, want)
			}
		})
	}
}
