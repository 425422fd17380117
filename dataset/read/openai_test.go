package read

import (
	"errors"
	"testing"

	"github.com/largeforge/largeforge/schemas"
)

// OpenAI's chat and preference lines become the dictionary's ShareGPT and
// DPO records (a weight-0 assistant message a weight-0 gpt turn); what has
// no such record is rejected naming the field.
func TestOpenAIRecords(t *testing.T) {
	zero := 0
	tests := []struct {
		name      string
		line      string
		want      schemas.Record
		wantField string // a rejection
	}{
		{"chat", `{"messages":[{"role":"developer","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"Hi"},{"type":"text","text":"there"}]},{"role":"assistant","content":"Hello","weight":0},{"role":"user","content":"Again"},{"role":"assistant","content":"Hi again","weight":1}]}`,
			schemas.Record{Format: schemas.FormatShareGPT, ShareGPT: schemas.ShareGPT{Conversations: []schemas.Turn{
				{From: "system", Value: "Be brief."}, {From: "human", Value: "Hi\nthere"}, {From: "gpt", Value: "Hello", Weight: &zero},
				{From: "human", Value: "Again"}, {From: "gpt", Value: "Hi again"}}}}, ""},
		{"preference", `{"input":{"messages":[{"role":"user","content":"Pick"}],"tools":[]},"preferred_output":[{"role":"assistant","content":"A"}],"non_preferred_output":[{"role":"assistant","content":"B"}]}`,
			schemas.Record{Format: schemas.FormatDPO, DPO: schemas.DPO{Prompt: "Pick", Chosen: "A", Rejected: "B"}}, ""},
		{"tool role", `{"messages":[{"role":"user","content":"x"},{"role":"tool","content":"y"}]}`, schemas.Record{}, "messages[1].role"},
		{"tool calls", `{"messages":[{"role":"user","content":"x"},{"role":"assistant","content":"y","tool_calls":[{"id":"1"}]}]}`, schemas.Record{}, "messages[1].tool_calls"},
		{"weight on user", `{"messages":[{"role":"user","content":"x","weight":0},{"role":"assistant","content":"y"}]}`, schemas.Record{}, "messages[0].weight"},
		{"weight 0.5", `{"messages":[{"role":"user","content":"x"},{"role":"assistant","content":"y","weight":0.5}]}`, schemas.Record{}, "messages[1].weight"},
		{"image part", `{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"u"}}]},{"role":"assistant","content":"y"}]}`, schemas.Record{}, "messages[0].content[0].type"},
		{"one message", `{"messages":[{"role":"user","content":"x"}]}`, schemas.Record{}, "conversations"},
		{"multi-turn preference", `{"input":{"messages":[{"role":"system","content":"s"},{"role":"user","content":"Pick"}]},"preferred_output":[{"role":"assistant","content":"A"}],"non_preferred_output":[{"role":"assistant","content":"B"}]}`, schemas.Record{}, "input.messages"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, ok := OpenAIFormat([]byte(tt.line))
			if !ok {
				t.Fatal("not taken for an OpenAI line")
			}
			got, err := decodeRecord(f, []byte(tt.line))
			if tt.wantField != "" {
				var ve *schemas.ValidationError
				if !errors.As(err, &ve) || ve.Field != tt.wantField {
					t.Fatalf("%v, want a rejection of %s", err, tt.wantField)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(got.CanonicalJSON()) != string(tt.want.CanonicalJSON()) {
				t.Errorf("got %s\nwant %s", got.CanonicalJSON(), tt.want.CanonicalJSON())
			}
		})
	}
	if _, ok := OpenAIFormat([]byte(`{"conversations":[]}`)); ok {
		t.Error("a ShareGPT line taken for OpenAI's")
	}
}
