package train

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/largeforge/largeforge/model/checkpoint"
	"github.com/largeforge/largeforge/model/tokenizer"
	"github.com/largeforge/largeforge/schemas"
)

// tinyBase writes a freshly initialised tiny model with its byte-level
// tokenizer into a temporary directory.
func tinyBase(t *testing.T) (string, *checkpoint.Checkpoint, *tokenizer.Tokenizer) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "base")
	if err := checkpoint.Init("tiny", 7, dir); err != nil {
		t.Fatal(err)
	}
	ck, err := checkpoint.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return dir, ck, tok
}

func testConfig(out string) schemas.TrainingConfig {
	c := schemas.DefaultTrainingConfig()
	c.ModelName = "tiny"
	c.OutputDir = out
	c.BF16 = false
	return c
}

// syntheticTask is a small SFT task: short instructions, each with a
// fixed answer.
func syntheticTask(n int) []schemas.Record {
	answers := []string{"red", "blue", "green", "gold"}
	recs := make([]schemas.Record, n)
	for i := range recs {
		recs[i] = schemas.Record{Format: schemas.FormatAlpaca, Alpaca: schemas.Alpaca{
			Instruction: fmt.Sprintf("Colour %d?", i%len(answers)),
			Output:      answers[i%len(answers)],
		}}
	}
	return recs
}

func render(t *testing.T, tok *tokenizer.Tokenizer, recs []schemas.Record, maxLen int) []Example {
	t.Helper()
	r, err := NewRenderer(tok, maxLen)
	if err != nil {
		t.Fatal(err)
	}
	exs, _, err := r.RenderAll(recs)
	if err != nil {
		t.Fatal(err)
	}
	return exs
}
