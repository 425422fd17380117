package tokenizer

import (
	"encoding/json"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/largeforge/largeforge/internal/testenv"
)

// readLlamaCppVectors reads a llama.cpp .inp/.out pair: texts separated by
// __ggml_vocab_test__ lines and one line of ids per text (without BOS).
func readLlamaCppVectors(t *testing.T, base string) (texts []string, want [][]int) {
	t.Helper()
	inp, err := os.ReadFile(testenv.SharedFile(t, "tokenizers/llamacpp-tests/"+base+".inp"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := os.ReadFile(testenv.SharedFile(t, "tokenizers/llamacpp-tests/"+base+".out"))
	if err != nil {
		t.Fatal(err)
	}
	texts = strings.Split(string(inp), "\n__ggml_vocab_test__\n")
	lines := strings.Split(string(out), "\n")
	if len(texts) != len(lines) {
		t.Fatalf("%s: %d texts but %d id lines", base, len(texts), len(lines))
	}
	for _, line := range lines {
		var ids []int
		for _, f := range strings.Fields(line) {
			id, err := strconv.Atoi(f)
			if err != nil {
				t.Fatalf("%s: bad id %q", base, f)
			}
			ids = append(ids, id)
		}
		want = append(want, ids)
	}
	return texts, want
}

func TestLlamaCppVectors(t *testing.T) {
	tests := []struct {
		name string
		base string
		tok  func(testing.TB) *Tokenizer
	}{
		{name: "llama-spm", base: "ggml-vocab-llama-spm.gguf", tok: llama2},
		{name: "qwen2", base: "ggml-vocab-qwen2.gguf", tok: qwen3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok := tc.tok(t)
			texts, want := readLlamaCppVectors(t, tc.base)
			for k, text := range texts {
				got := tok.Encode(text, false)
				if !slices.Equal(got, want[k]) && !(len(got) == 0 && len(want[k]) == 0) {
					t.Errorf("case %d %q:\n got %v\nwant %v", k, text, got, want[k])
					continue
				}
				if dec := tok.Decode(got, true); dec != text {
					t.Errorf("case %d: Decode = %q, want %q", k, dec, text)
				}
			}
		})
	}
}

type goldenCase struct {
	Text     string   `json:"text"`
	IDs      []int    `json:"ids"`
	IDsBOS   []int    `json:"ids_with_bos"`
	LlamaCpp []int    `json:"llamacpp_ids_with_bos"`
	Tokens   []string `json:"tokens"`
	Decoded  string   `json:"decoded"`
}

func TestGoldenEncodings(t *testing.T) {
	b, err := os.ReadFile(testenv.SharedFile(t, "tokenizers/golden_encodings.json"))
	if err != nil {
		t.Fatal(err)
	}
	var golden map[string][]goldenCase
	if err := json.Unmarshal(b, &golden); err != nil {
		t.Fatal(err)
	}
	toks := map[string]func(testing.TB) *Tokenizer{"stories260K": stories, "llama2": llama2, "qwen3": qwen3}
	for name, cases := range golden {
		t.Run(name, func(t *testing.T) {
			getTok, ok := toks[name]
			if !ok {
				t.Fatalf("no tokenizer for golden set %q", name)
			}
			tok := getTok(t)
			for _, c := range cases {
				want := c.IDs
				if want == nil {
					want = c.IDsBOS
				}
				got := tok.Encode(c.Text, true)
				if !slices.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
					t.Errorf("Encode(%q) = %v, want %v", c.Text, got, want)
				}
				if c.LlamaCpp != nil && !slices.Equal(got, c.LlamaCpp) {
					t.Errorf("Encode(%q) = %v, llama.cpp %v", c.Text, got, c.LlamaCpp)
				}
				for k, s := range c.Tokens {
					if k < len(got) && tok.Token(got[k]) != s {
						t.Errorf("Encode(%q) token %d = %q, want %q", c.Text, k, tok.Token(got[k]), s)
					}
				}
				if dec := tok.Decode(want, true); dec != c.Decoded {
					t.Errorf("Decode(%v) = %q, want %q", want, dec, c.Decoded)
				}
			}
		})
	}
}
