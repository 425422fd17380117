package schemas

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestDecodeRequest(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    error // nil: any error when wantErr
		wantErr bool
	}{
		{"completion with defaults", `{"job":"j1","custom_id":"a","kind":"completion","model":"m","completion":{"model":"m","prompt":"hi"}}`, nil, false},
		{"score text", `{"job":"j1","custom_id":"a","kind":"score","model":"m","score":{"text":"hi there"}}`, nil, false},
		{"score dpo", `{"job":"j1","custom_id":"a","kind":"score","model":"m","score":{"prompt":"p","chosen":"c","rejected":"r"}}`, nil, false},
		{"score half dpo", `{"job":"j1","custom_id":"a","kind":"score","model":"m","score":{"prompt":"p","chosen":"c"}}`, ErrInvalidRequest, true},
		{"bad max_tokens", `{"job":"j1","custom_id":"a","kind":"completion","model":"m","completion":{"model":"m","prompt":"hi","max_tokens":0}}`, ErrInvalidMaxTokens, true},
		{"bad temperature", `{"job":"j1","custom_id":"a","kind":"completion","model":"m","completion":{"model":"m","prompt":"hi","temperature":3}}`, ErrTemperatureOutOfRange, true},
		{"not json", `nope`, ErrBadMessage, true},
		{"no custom id", `{"job":"j1","kind":"completion","completion":{"model":"m","prompt":"hi"}}`, ErrBadMessage, true},
		{"bad job", `{"job":"j.1","custom_id":"a","kind":"completion","completion":{"model":"m","prompt":"hi"}}`, ErrBadMessage, true},
		{"wrong body", `{"job":"j1","custom_id":"a","kind":"score","completion":{"model":"m","prompt":"hi"}}`, ErrBadMessage, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := DecodeRequest([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
			if err == nil && r.Kind == KindCompletion && r.Completion.MaxTokens != DefaultMaxTokens {
				t.Errorf("default max_tokens not applied: %d", r.Completion.MaxTokens)
			}
		})
	}
}

func TestDecodeResult(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr bool
	}{
		{"error row", `{"job":"j1","custom_id":"a","error":{"code":"invalid_request","message":"Invalid max_tokens"}}`, false},
		{"score row", `{"job":"j1","custom_id":"a","score":{"sum_logprob":-1}}`, false},
		{"control", `{"job":"j1","control":"submitted"}`, false},
		{"unknown control", `{"job":"j1","control":"reboot"}`, true},
		{"two outcomes", `{"job":"j1","custom_id":"a","score":{},"error":{"code":"x"}}`, true},
		{"no outcome", `{"job":"j1","custom_id":"a"}`, true},
		{"control char id", `{"job":"j1","custom_id":"a\nb","score":{}}`, true},
		{"array", `[1]`, true},
		{"null body beside an error", `{"job":"j1","custom_id":"a","response":null,"error":{"code":"x"}}`, false},
		{"body not an object", `{"job":"j1","custom_id":"a","response":"hi"}`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeResult([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, ErrBadMessage) {
				t.Errorf("err %v does not wrap ErrBadMessage", err)
			}
		})
	}
}

// TestResultBody: the body is encoded once by NewResult and travels as
// those bytes through DecodeResult; DecodeResponse and DecodeScore read it.
func TestResultBody(t *testing.T) {
	resp := CompletionResponse{ID: "cmpl-1", Object: ObjectTextCompletion, Model: "m", Choices: []Choice{{Text: "a <b> & c", FinishReason: "stop", Logprobs: json.RawMessage("null")}}}
	margin := 0.5
	score := ScoreOutput{SumLogprob: -1, Tokens: 2, DPOMargin: &margin}
	tests := []struct {
		name    string
		kind    string
		body    any
		wantErr bool
	}{
		{"completion", KindCompletion, resp, false},
		{"score", KindScore, score, false},
		{"training", KindTraining, resp, true},
		{"not encodable", KindScore, func() {}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := NewResult("j1", "a", "m", tt.kind, 3, tt.body)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil {
				if !errors.Is(err, ErrBadMessage) {
					t.Errorf("err %v does not wrap ErrBadMessage", err)
				}
				return
			}
			want, _ := json.Marshal(tt.body)
			msg, err := json.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			back, err := DecodeResult(msg)
			if err != nil {
				t.Fatal(err)
			}
			var got any
			if tt.kind == KindCompletion {
				if string(back.Response) != string(want) || back.Score != nil {
					t.Errorf("response %s score %s, want the body %s as encoded", back.Response, back.Score, want)
				}
				got, err = back.DecodeResponse()
			} else {
				if string(back.Score) != string(want) || back.Response != nil {
					t.Errorf("score %s response %s, want the body %s as encoded", back.Score, back.Response, want)
				}
				got, err = back.DecodeScore()
			}
			if err != nil || !reflect.DeepEqual(got, tt.body) {
				t.Errorf("decoded %+v (%v), want %+v", got, err, tt.body)
			}
		})
	}
	if _, err := (Result{Job: "j1", CustomID: "a", Response: json.RawMessage(`{"choices":1}`)}).DecodeResponse(); !errors.Is(err, ErrBadMessage) {
		t.Errorf("a response that is no CompletionResponse: err %v, want ErrBadMessage", err)
	}
}

func FuzzDecodeRequest(f *testing.F) {
	f.Add([]byte(`{"job":"j1","custom_id":"a","kind":"completion","model":"m","completion":{"model":"m","prompt":"hi"}}`))
	f.Add([]byte(`{"job":"j1","custom_id":"a","kind":"score","score":{"text":"x"}}`))
	f.Add([]byte(`{"completion":null}`))
	f.Add([]byte(`{"job":"` + strings.Repeat("x", 200) + `"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := DecodeRequest(data)
		if err == nil {
			if r.Validate() != nil {
				t.Fatalf("decoded request does not validate: %+v", r)
			}
			if (r.Kind == KindCompletion) != (r.Completion != nil) {
				t.Fatalf("kind %s with completion %v", r.Kind, r.Completion)
			}
		}
	})
}

func FuzzDecodeResult(f *testing.F) {
	f.Add([]byte(`{"job":"j1","custom_id":"a","error":{"code":"x","message":"y"}}`))
	f.Add([]byte(`{"job":"j1","control":"submitted"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := DecodeResult(data)
		if err == nil && r.Control == "" && ValidCustomID(r.CustomID) != nil {
			t.Fatalf("accepted a bad custom_id %q", r.CustomID)
		}
	})
}
