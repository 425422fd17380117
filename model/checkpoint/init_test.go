package checkpoint

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"unicode/utf8"
)

func TestInitTiny(t *testing.T) {
	a, b, c := t.TempDir(), t.TempDir(), t.TempDir()
	for _, run := range []struct {
		dir  string
		seed int64
	}{{a, 1}, {b, 1}, {c, 2}} {
		if err := Init("tiny", run.seed, run.dir); err != nil {
			t.Fatalf("Init: %v", err)
		}
	}
	wa, _ := os.ReadFile(filepath.Join(a, WeightsFile))
	wb, _ := os.ReadFile(filepath.Join(b, WeightsFile))
	wc, _ := os.ReadFile(filepath.Join(c, WeightsFile))
	if !bytes.Equal(wa, wb) {
		t.Errorf("same seed gave different weights")
	}
	if bytes.Equal(wa, wc) {
		t.Errorf("different seeds gave the same weights")
	}

	ck, err := Load(a)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want, _ := PresetConfig("tiny")
	if !reflect.DeepEqual(ck.Config, want) {
		t.Errorf("config %+v, want %+v", ck.Config, want)
	}
	if n := paramCount(ck.Tensors); n < 200_000 || n > 500_000 {
		t.Errorf("tiny has %d parameters, want a few hundred thousand", n)
	}
	// HF init: normal(0, 0.02) weights, unit norms.
	emb := ck.Tensors["model.embed_tokens.weight"].Data
	var sum, sq float64
	for _, v := range emb {
		sum += float64(v)
		sq += float64(v) * float64(v)
	}
	mean := sum / float64(len(emb))
	std := math.Sqrt(sq/float64(len(emb)) - mean*mean)
	if math.Abs(mean) > 0.002 || math.Abs(std-InitStd) > 0.002 {
		t.Errorf("embedding mean %g std %g, want about 0 and %g", mean, std, InitStd)
	}
	for _, v := range ck.Tensors["model.layers.0.input_layernorm.weight"].Data {
		if v != 1 {
			t.Fatalf("norm weight %g, want 1", v)
		}
	}
	if ck.Generation.BOSTokenID != ByteBOSID || !reflect.DeepEqual(ck.Generation.EOSTokenIDs, []int{ByteEOSID}) {
		t.Errorf("generation config %+v", ck.Generation)
	}

	info, err := Describe(a)
	if err != nil {
		t.Fatal(err)
	}
	if !info.HasTokenizer || info.Parameters != paramCount(ck.Tensors) {
		t.Errorf("Describe = %+v", info)
	}
	for _, f := range []string{ConfigFile, GenerationConfigFile, WeightsFile, TokenizerFile, TokenizerConfigFile, SpecialTokensMapFile} {
		if !contains(info.Files, f) {
			t.Errorf("Init did not write %s (files %v)", f, info.Files)
		}
	}
}

func TestInit15M(t *testing.T) {
	if testing.Short() {
		t.Skip("writes a 60 MB checkpoint")
	}
	dir := t.TempDir()
	if err := Init("15m", 0, dir); err != nil {
		t.Fatal(err)
	}
	info, err := Describe(dir)
	if err != nil {
		t.Fatal(err)
	}
	c := info.Config
	if c.HiddenSize != 288 || c.NumLayers != 6 || c.NumHeads != 6 || c.IntermediateSize != 768 || c.VocabSize != 32000 {
		t.Errorf("15m config %+v", c)
	}
	if info.Parameters < 15_000_000 || info.Parameters > 15_500_000 {
		t.Errorf("15m has %d parameters", info.Parameters)
	}
}

func TestInitUnknownPreset(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "x")
	err := Init("7b", 1, dir)
	if !errors.Is(err, ErrUnknownPreset) {
		t.Fatalf("err = %v, want ErrUnknownPreset", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("directory created for an unknown preset")
	}
	bad, _ := PresetConfig("tiny")
	bad.NumKVHeads = 3
	if _, err := InitTensors(bad, 1); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("InitTensors with 8 heads over 3 KV heads: err = %v, want ErrInvalidConfig", err)
	}
	if got := Presets(); !reflect.DeepEqual(got, []string{"15m", "k256", "k256sharp", "tiny"}) {
		t.Errorf("Presets() = %v", got)
	}
}

func TestByteLevelTokenizerJSON(t *testing.T) {
	dir := t.TempDir()
	if err := writeByteTokenizer(dir, 128); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, TokenizerFile))
	if err != nil {
		t.Fatal(err)
	}
	var tok struct {
		AddedTokens []addedToken `json:"added_tokens"`
		PreTok      struct {
			Type string `json:"type"`
		} `json:"pre_tokenizer"`
		Decoder struct {
			Type string `json:"type"`
		} `json:"decoder"`
		Model struct {
			Type   string         `json:"type"`
			Vocab  map[string]int `json:"vocab"`
			Merges []string       `json:"merges"`
		} `json:"model"`
	}
	if err := json.Unmarshal(raw, &tok); err != nil {
		t.Fatalf("tokenizer.json is not valid JSON: %v", err)
	}
	if tok.Model.Type != "BPE" || tok.PreTok.Type != "ByteLevel" || tok.Decoder.Type != "ByteLevel" || tok.Model.Merges == nil || len(tok.Model.Merges) != 0 {
		t.Errorf("tokenizer structure: %+v", tok)
	}
	if len(tok.Model.Vocab) != 256 {
		t.Fatalf("vocab has %d entries, want 256", len(tok.Model.Vocab))
	}
	// GPT-2's vocabulary: "!" is 0, "A" 32, space "Ġ" 220, newline "Ċ" 198.
	for s, id := range map[string]int{"!": 0, "A": 32, "Ġ": 220, "Ċ": 198, "Ā": 188, "ÿ": 187} {
		if got, ok := tok.Model.Vocab[s]; !ok || got != id {
			t.Errorf("vocab[%q] = %d, want %d", s, got, id)
		}
	}
	ids := map[int]bool{}
	for s, id := range tok.Model.Vocab {
		if utf8.RuneCountInString(s) != 1 {
			t.Errorf("byte token %q is not one rune", s)
		}
		ids[id] = true
	}
	if len(ids) != 256 {
		t.Errorf("vocab ids are not distinct")
	}
	for i, want := range []string{"<s>", "</s>", "<pad>"} {
		if a := tok.AddedTokens[i]; a.ID != 256+i || a.Content != want || !a.Special {
			t.Errorf("added token %d = %+v", i, a)
		}
	}
	if len(tok.AddedTokens) != 3 || !tok.AddedTokens[0].Special || tok.AddedTokens[2].Content != "<pad>" {
		t.Errorf("added tokens %+v", tok.AddedTokens)
	}
}
