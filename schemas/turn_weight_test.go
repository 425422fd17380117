package schemas

import (
	"errors"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/memory"
)

// A gpt turn's "weight": 0 is kept through decoding, the canonical JSON
// (and so the record id) and Arrow; weight 1 is the default and leaves the
// record as without it; a weight elsewhere or of another value is rejected.
func TestTurnWeight(t *testing.T) {
	rec, err := DecodeRecord(FormatShareGPT, []byte(`{"conversations":[{"from":"human","value":"h"},{"from":"gpt","value":"g","weight":0},{"from":"human","value":"h2"},{"from":"gpt","value":"g2","weight":1}]}`))
	if err != nil {
		t.Fatal(err)
	}
	c := rec.ShareGPT.Conversations
	if c[1].Weight == nil || *c[1].Weight != 0 || c[3].Weight != nil || c[1].Trained() || !c[3].Trained() {
		t.Fatalf("turns %+v", c)
	}
	plain, _ := DecodeRecord(FormatShareGPT, []byte(`{"conversations":[{"from":"human","value":"h"},{"from":"gpt","value":"g"},{"from":"human","value":"h2"},{"from":"gpt","value":"g2"}]}`))
	if rec.ID() == plain.ID() || string(rec.CanonicalJSON()) != `{"conversations":[{"from":"human","value":"h"},{"from":"gpt","value":"g","weight":0},{"from":"human","value":"h2"},{"from":"gpt","value":"g2"}]}` {
		t.Errorf("canonical %s", rec.CanonicalJSON())
	}
	batch, err := RecordsToArrow(memory.DefaultAllocator, FormatShareGPT, []Record{rec, plain})
	if err != nil {
		t.Fatal(err)
	}
	defer batch.Release()
	back, _, err := RecordsFromArrow(FormatShareGPT, batch)
	if err != nil {
		t.Fatal(err)
	}
	if back[0].ID() != rec.ID() || back[1].ID() != plain.ID() {
		t.Errorf("arrow round trip: %s, %s", back[0].CanonicalJSON(), back[1].CanonicalJSON())
	}
	for _, bad := range []string{
		`{"conversations":[{"from":"human","value":"h","weight":0},{"from":"gpt","value":"g"}]}`,
		`{"conversations":[{"from":"human","value":"h"},{"from":"gpt","value":"g","weight":2}]}`,
		`{"conversations":[{"from":"human","value":"h"},{"from":"gpt","value":"g","weight":"0"}]}`,
	} {
		var ve *ValidationError
		if _, err := DecodeRecord(FormatShareGPT, []byte(bad)); !errors.As(err, &ve) || ve.Rule != "enum" {
			t.Errorf("%s: %v, want an enum rejection of the weight", bad, err)
		}
	}
}
