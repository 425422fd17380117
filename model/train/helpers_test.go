package train

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
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
	ck, tok := loadBase(t, dir)
	return dir, ck, tok
}

// loadBase loads the checkpoint and tokenizer of a model directory.
func loadBase(t *testing.T, dir string) (*checkpoint.Checkpoint, *tokenizer.Tokenizer) {
	t.Helper()
	ck, err := checkpoint.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return ck, tok
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

// shortTask is the synthetic task as short raw examples (question, answer
// and EOS; loss on the answer), cheap enough to train on in seconds.
func shortTask(t *testing.T, tok *tokenizer.Tokenizer, n int) []Example {
	t.Helper()
	answers := []string{"red", "blue", "green", "gold"}
	eos, _ := tok.EOS()
	exs := make([]Example, n)
	for i := range exs {
		var ex Example
		for _, id := range tok.Encode(fmt.Sprintf("Q%d:", i%len(answers)), false) {
			ex.Tokens, ex.Weights = append(ex.Tokens, int32(id)), append(ex.Weights, 0)
		}
		for _, id := range append(tok.Encode(answers[i%len(answers)], false), eos) {
			ex.Tokens, ex.Weights = append(ex.Tokens, int32(id)), append(ex.Weights, 1)
		}
		exs[i] = ex
	}
	return exs
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

// alpacaJSONL writes syntheticTask(n) as an Alpaca JSONL file and returns
// its path.
func alpacaJSONL(t *testing.T, n int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "colours.jsonl")
	var lines []string
	for _, r := range syntheticTask(n) {
		lines = append(lines, fmt.Sprintf(`{"instruction":%q,"output":%q}`, r.Alpaca.Instruction, r.Alpaca.Output))
	}
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}
