package checkpoint_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/largeforge/largeforge/internal/testenv"
	"github.com/largeforge/largeforge/model"
	"github.com/largeforge/largeforge/model/checkpoint"
	"github.com/largeforge/largeforge/model/tokenizer"
)

// TestImportedStories260KGenerates imports the GGUF and checks that the
// tokenizer and the decoder give the reference outputs from it.
func TestImportedStories260KGenerates(t *testing.T) {
	ggufPath := testenv.SharedFile(t, "models/gguf/stories260K.gguf")
	refDir := filepath.Dir(testenv.SharedFile(t, "models/stories260K/tokenizer.json"))
	refPath := testenv.SharedFile(t, "models/stories260K.reference.json")
	dir := t.TempDir()
	if err := checkpoint.ImportGGUF(ggufPath, dir); err != nil {
		t.Fatal(err)
	}

	var ref struct {
		Prompts []struct {
			Prompt    string `json:"prompt"`
			PromptIDs []int  `json:"prompt_ids"`
			Greedy    []int  `json:"greedy_ids"`
		} `json:"prompts"`
	}
	raw, err := os.ReadFile(refPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &ref); err != nil {
		t.Fatal(err)
	}
	if len(ref.Prompts) == 0 {
		t.Fatal("reference has no prompts")
	}

	imported, err := tokenizer.LoadDir(dir)
	if err != nil {
		t.Fatalf("tokenizer of the import: %v", err)
	}
	want, err := tokenizer.LoadDir(refDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, text := range []string{ref.Prompts[0].Prompt, "Lily saw a big dog. \"Hi!\" she said.\n", "naïve café ☃"} {
		g, w := imported.Encode(text, true), want.Encode(text, true)
		if !reflect.DeepEqual(g, w) {
			t.Errorf("Encode(%q) = %v, reference tokenizer %v", text, g, w)
		}
		if gd, wd := imported.Decode(g, true), want.Decode(w, true); gd != wd {
			t.Errorf("Decode = %q, reference %q", gd, wd)
		}
	}
	p := ref.Prompts[0]
	if ids := imported.Encode(p.Prompt, true); !reflect.DeepEqual(ids, p.PromptIDs) {
		t.Errorf("prompt ids %v, reference %v", ids, p.PromptIDs)
	}

	m, err := model.Load(dir)
	if err != nil {
		t.Fatalf("model.Load of the import: %v", err)
	}
	defer m.Close()
	n := min(16, len(p.Greedy))
	res, err := m.Generate(context.Background(), []model.GenerateRequest{{PromptIDs: p.PromptIDs, Params: model.SamplingParams{MaxTokens: n, EOS: []int{-1}}}})
	if err != nil {
		t.Fatal(err)
	}
	if got := res[0].IDs; !reflect.DeepEqual(got, p.Greedy[:n]) {
		t.Errorf("greedy ids from the import %v, reference %v", got, p.Greedy[:n])
	}
}

// TestInitTokenizerLoads checks that the byte-level tokenizer Init writes is
// read by model/tokenizer and round-trips text.
func TestInitTokenizerLoads(t *testing.T) {
	dir := t.TempDir()
	if err := checkpoint.Init("tiny", 1, dir); err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.LoadDir(dir)
	if err != nil {
		t.Fatalf("tokenizer.LoadDir: %v", err)
	}
	text := "Hello, wörld!\n\ttabs ☃"
	ids := tok.Encode(text, true)
	if bos, ok := tok.BOS(); !ok || bos != checkpoint.ByteBOSID || len(ids) == 0 || ids[0] != bos {
		t.Errorf("BOS %d %v, ids %v", bos, ok, ids)
	}
	if len(ids) != 1+len(text) {
		t.Errorf("%d ids for %d bytes plus BOS", len(ids), len(text))
	}
	if got := tok.Decode(ids, true); got != text {
		t.Errorf("round trip %q, want %q", got, text)
	}
	if eos, ok := tok.EOS(); !ok || eos != checkpoint.ByteEOSID {
		t.Errorf("EOS %d %v", eos, ok)
	}
}
