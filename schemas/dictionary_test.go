package schemas

import (
	"bytes"
	"os"
	"regexp"
	"testing"

	"github.com/largeforge/largeforge/internal/testenv"
)

// TestSchemasMatchDictionary checks that the embedded JSON Schemas are the
// data dictionary's §1 schemas verbatim, and that the dictionary's §7.1
// error strings are the sentinels' messages.
func TestSchemasMatchDictionary(t *testing.T) {
	dict, err := os.ReadFile(testenv.SharedFile(t, "DATA_DICTIONARY.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)\\*\\*Schema:\\*\\*\n```json\n(.*?)```").FindAllSubmatch(dict, -1)
	if len(blocks) != 3 {
		t.Fatalf("found %d schema blocks in the dictionary, want 3", len(blocks))
	}
	for i, f := range Formats() {
		if !bytes.Equal(SchemaJSON(f), blocks[i][1]) {
			t.Errorf("embedded %s schema differs from DATA_DICTIONARY §1.%d", f, i+1)
		}
	}
	for _, e := range []error{ErrModelNameRequired, ErrPromptTooLong, ErrInvalidMaxTokens, ErrTemperatureOutOfRange,
		ErrLearningRateNotPositive, ErrBatchSizeTooSmall, ErrInvalidModelPath} {
		if !bytes.Contains(dict, []byte(`"`+e.Error()+`"`)) {
			t.Errorf("%q is not an error string of the dictionary", e.Error())
		}
	}
}
