package checkpoint

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/largeforge/largeforge/internal/testenv"
)

func TestImportGGUFStories260K(t *testing.T) {
	ggufPath := testenv.SharedFile(t, "models/gguf/stories260K.gguf")
	refDir := filepath.Dir(testenv.SharedFile(t, "models/stories260K/model.safetensors"))
	out := t.TempDir()
	if err := ImportGGUF(ggufPath, out); err != nil {
		t.Fatalf("ImportGGUF: %v", err)
	}
	got, err := Load(out)
	if err != nil {
		t.Fatalf("Load imported: %v", err)
	}
	want, err := Load(refDir)
	if err != nil {
		t.Fatalf("Load reference: %v", err)
	}
	if !reflect.DeepEqual(got.Config, want.Config) {
		t.Errorf("config:\n got %+v\nwant %+v", got.Config, want.Config)
	}
	if got.Generation.BOSTokenID != want.Generation.BOSTokenID || !reflect.DeepEqual(got.Generation.EOSTokenIDs, want.Generation.EOSTokenIDs) {
		t.Errorf("generation config: got %+v, want %+v", got.Generation, want.Generation)
	}
	if len(got.Tensors) != len(want.Tensors) {
		t.Errorf("got %d tensors, want %d", len(got.Tensors), len(want.Tensors))
	}
	for name, w := range want.Tensors {
		g, ok := got.Tensors[name]
		if !ok {
			t.Errorf("tensor %s missing from import", name)
			continue
		}
		if !reflect.DeepEqual(g.Shape, w.Shape) {
			t.Errorf("tensor %s: shape %v, want %v", name, g.Shape, w.Shape)
			continue
		}
		for i := range w.Data {
			if math.Float32bits(g.Data[i]) != math.Float32bits(w.Data[i]) { // bit-exact
				t.Errorf("tensor %s[%d] = %g, want %g", name, i, g.Data[i], w.Data[i])
				break
			}
		}
	}

	// tokenizer.json: same vocab and merges as the reference.
	type tok struct {
		Model struct {
			Vocab  map[string]int `json:"vocab"`
			Merges []string       `json:"merges"`
		} `json:"model"`
		AddedTokens []map[string]any `json:"added_tokens"`
	}
	read := func(p string) tok {
		t.Helper()
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var x tok
		if err := json.Unmarshal(b, &x); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		return x
	}
	gt, wt := read(filepath.Join(out, TokenizerFile)), read(filepath.Join(refDir, TokenizerFile))
	if !reflect.DeepEqual(gt.Model.Vocab, wt.Model.Vocab) {
		t.Errorf("tokenizer vocab differs (%d vs %d entries)", len(gt.Model.Vocab), len(wt.Model.Vocab))
	}
	if !reflect.DeepEqual(gt.Model.Merges, wt.Model.Merges) {
		t.Errorf("tokenizer merges differ: got %d, want %d; first got %q want %q", len(gt.Model.Merges), len(wt.Model.Merges), gt.Model.Merges[:min(5, len(gt.Model.Merges))], wt.Model.Merges[:min(5, len(wt.Model.Merges))])
	}
	if !reflect.DeepEqual(gt.AddedTokens, wt.AddedTokens) {
		t.Errorf("added tokens: got %v, want %v", gt.AddedTokens, wt.AddedTokens)
	}
	// The whole tokenizer.json is semantically equal to the reference.
	var ga, wa any
	for p, dst := range map[string]*any{filepath.Join(out, TokenizerFile): &ga, filepath.Join(refDir, TokenizerFile): &wa} {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, dst); err != nil {
			t.Fatal(err)
		}
	}
	if !reflect.DeepEqual(ga, wa) {
		t.Errorf("tokenizer.json differs from the reference beyond vocab and merges")
	}
	for _, f := range []string{TokenizerConfigFile, SpecialTokensMapFile} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("%s not written: %v", f, err)
		}
	}
}
