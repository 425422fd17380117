package submit

import (
	"testing"

	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/schemas"
)

func TestParseRow(t *testing.T) {
	tests := []struct {
		name     string
		kind     string
		in       string
		wantID   string
		wantCode string // "" : a request
		wantMsg  string
	}{
		{"plain with id", jobs.KindCompletion, `{"custom_id":"a","prompt":"Once"}`, "a", "", ""},
		{"missing id is the line", jobs.KindCompletion, `{"prompt":"Once"}`, "7", "", ""},
		{"numeric id", jobs.KindCompletion, `{"custom_id":12,"prompt":"Once"}`, "12", "", ""},
		{"batch api completion", jobs.KindCompletion, `{"custom_id":"b","method":"POST","url":"/v1/completions","body":{"model":"stories","prompt":"Once","max_tokens":5}}`, "b", "", ""},
		{"batch api chat", jobs.KindCompletion, `{"custom_id":"c","method":"POST","url":"/v1/chat/completions","body":{"messages":[{"role":"user","content":"hi"}]}}`, "c", "", ""},
		{"bad url", jobs.KindCompletion, `{"custom_id":"d","method":"POST","url":"/v1/embeddings","body":{"prompt":"x"}}`, "d", schemas.CodeInvalidRequest, ""},
		{"chat url without messages", jobs.KindCompletion, `{"custom_id":"d","method":"POST","url":"/v1/chat/completions","body":{"prompt":"x"}}`, "d", schemas.CodeInvalidRequest, ""},
		{"bad max_tokens", jobs.KindCompletion, `{"custom_id":"e","prompt":"x","max_tokens":0}`, "e", schemas.CodeInvalidRequest, "Invalid max_tokens"},
		{"bad temperature", jobs.KindCompletion, `{"custom_id":"e","prompt":"x","temperature":2.5}`, "e", schemas.CodeInvalidRequest, "Temperature out of range"},
		{"other model", jobs.KindCompletion, `{"custom_id":"f","model":"gpt","prompt":"x"}`, "f", schemas.CodeInvalidRequest, ""},
		{"not json", jobs.KindCompletion, `{"prompt":`, "7", schemas.CodeInvalidRequest, ""},
		{"bad custom id", jobs.KindCompletion, `{"custom_id":"a\u0000b","prompt":"x"}`, "7", schemas.CodeInvalidRequest, ""},
		{"score text", jobs.KindScore, `{"custom_id":"s","text":"Once upon"}`, "s", "", ""},
		{"score dpo", jobs.KindScore, `{"custom_id":"s","prompt":"p","chosen":"c","rejected":"r"}`, "s", "", ""},
		{"score empty", jobs.KindScore, `{"custom_id":"s"}`, "s", schemas.CodeInvalidRequest, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, req, bad := parseRow([]byte(tt.in), 7, "stories", tt.kind)
			if id != tt.wantID {
				t.Errorf("id %q, want %q", id, tt.wantID)
			}
			if tt.wantCode == "" {
				if bad != nil {
					t.Fatalf("unexpected error row %+v", bad)
				}
				if tt.kind == jobs.KindCompletion && (req.Completion == nil || req.Completion.Model != "stories") {
					t.Errorf("request %+v", req)
				}
				if tt.kind == jobs.KindScore && req.Score == nil {
					t.Errorf("score request %+v", req)
				}
				return
			}
			if bad == nil || bad.code != tt.wantCode {
				t.Fatalf("got %+v, want code %s", bad, tt.wantCode)
			}
			if tt.wantMsg != "" && bad.msg != tt.wantMsg {
				t.Errorf("message %q, want %q", bad.msg, tt.wantMsg)
			}
		})
	}
}

func FuzzParseRow(f *testing.F) {
	for _, s := range []string{
		`{"custom_id":"a","prompt":"Once"}`,
		`{"custom_id":"b","method":"POST","url":"/v1/completions","body":{"prompt":"x","max_tokens":5}}`,
		`{"custom_id":"c","method":"POST","url":"/v1/chat/completions","body":{"messages":[{"role":"user","content":"hi"}]}}`,
		`{"text":"x"}`, `{"prompt":"p","chosen":"c","rejected":"r"}`, `{"custom_id":1e999}`, `[]`, ``,
	} {
		f.Add([]byte(s), true)
		f.Add([]byte(s), false)
	}
	f.Fuzz(func(t *testing.T, data []byte, score bool) {
		kind := jobs.KindCompletion
		if score {
			kind = jobs.KindScore
		}
		id, req, bad := parseRow(data, 3, "stories", kind)
		if schemas.ValidCustomID(id) != nil {
			t.Fatalf("invalid custom_id %q returned", id)
		}
		if bad != nil {
			if bad.code == "" || bad.msg == "" {
				t.Fatalf("error row without code or message: %+v", bad)
			}
			return
		}
		req.Job = "job1"
		if err := req.Validate(); err != nil {
			t.Fatalf("accepted row does not validate: %v (%s)", err, data)
		}
	})
}
