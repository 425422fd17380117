package read

import (
	"encoding/json"
	"testing"

	"github.com/largeforge/largeforge/schemas"
)

// TestRejectRecordDecodes: the dead-letter record of a file's reject is one
// that DecodeDLQRecord (dlq show, dlq replay) takes, with the dataset's raw
// subject, the original bytes and the reject's rule.
func TestRejectRecordDecodes(t *testing.T) {
	rec, msgID := RejectRecord("instruct-v1", "run1", Reject{Source: "samples/alpaca.jsonl", Line: 41, Field: "output",
		Rule: "required", Error: `field "output": required: missing required field`, Original: []byte(`{"instruction":"Name a color."}`)})
	data, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	got, err := schemas.DecodeDLQRecord(data)
	if err != nil {
		t.Fatalf("decode the reject's dlq record: %v\n%s", err, data)
	}
	if got.Subject != "lf.data.instruct-v1.raw" || got.Stage != schemas.StageIngest || string(got.Data) != `{"instruction":"Name a color."}` ||
		got.Headers[schemas.HeaderRule][0] != "required" || msgID == "" {
		t.Errorf("record %+v, msg id %q", got, msgID)
	}
}
