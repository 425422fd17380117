package tokenizer

import (
	"encoding/json"
	"errors"
	"os"
	"slices"
	"testing"
)

// testdata/split_golden.json holds, for each byte-level split pattern, texts
// and the matches Python's regex module finds for the pattern (which has the
// lookahead Go's regexp lacks).
func TestWordScannerGolden(t *testing.T) {
	b, err := os.ReadFile("testdata/split_golden.json")
	if err != nil {
		t.Fatal(err)
	}
	var golden map[string][][2]json.RawMessage
	if err := json.Unmarshal(b, &golden); err != nil {
		t.Fatal(err)
	}
	patterns := map[string]string{"gpt2": gpt2Pattern, "llama3": llama3Pattern, "qwen2": qwen2Pattern}
	for name, cases := range golden {
		t.Run(name, func(t *testing.T) {
			m, err := newRegexMatcher(patterns[name])
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := m.(wordScanner); !ok {
				t.Fatalf("pattern %s did not get the hand scanner", name)
			}
			for _, c := range cases {
				var text string
				var want []string
				if err := json.Unmarshal(c[0], &text); err != nil {
					t.Fatal(err)
				}
				if err := json.Unmarshal(c[1], &want); err != nil {
					t.Fatal(err)
				}
				got := splitBy(text, m, behIsolated, false, nil, new(scratch))
				if !slices.Equal(got, want) {
					t.Errorf("%q:\n got %q\nwant %q", text, got, want)
				}
			}
		})
	}
}

func TestSplitBehaviors(t *testing.T) {
	tests := []struct {
		name   string
		beh    splitBehavior
		invert bool
		want   []string
	}{
		{name: "removed", beh: behRemoved, want: []string{"a", "b", "c"}},
		{name: "isolated", beh: behIsolated, want: []string{"-", "a", "-", "-", "b", "-", "c"}},
		{name: "merged with previous", beh: behMergedWithPrevious, want: []string{"-", "a-", "-", "b-", "c"}},
		{name: "merged with next", beh: behMergedWithNext, want: []string{"-a", "-", "-b", "-c"}},
		{name: "contiguous", beh: behContiguous, want: []string{"-", "a", "--", "b", "-", "c"}},
		{name: "removed inverted", beh: behRemoved, invert: true, want: []string{"-", "-", "-", "-"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := splitBy("-a--b-c", literalMatcher{"-"}, tc.beh, tc.invert, nil, new(scratch))
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestCompileUnicodeRegex(t *testing.T) {
	tests := []struct {
		name    string
		pattern string
		text    string
		want    []string
		wantErr bool
	}{
		{name: "unicode space", pattern: `\s+`, text: "a\u00a0\u3000b c", want: []string{"\u00a0\u3000", " "}},
		{name: "unicode digits", pattern: `\d+`, text: "x١٢3y", want: []string{"١٢3"}},
		{name: "unicode word in class", pattern: `[\w']+`, text: "héllo, it's", want: []string{"héllo", "it's"}},
		{name: "negated outside class", pattern: `\S+`, text: "ab\u2003cd", want: []string{"ab", "cd"}},
		{name: "literal bracket", pattern: `[]a]+`, text: "x]a]y", want: []string{"]a]"}},
		{name: "negated inside class", pattern: `[\S]`, wantErr: true},
		{name: "lookahead", pattern: `\s+(?!\S)`, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := newRegexMatcher(tc.pattern)
			if tc.wantErr {
				if !errors.Is(err, ErrUnsupported) {
					t.Fatalf("err = %v, want ErrUnsupported", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := splitBy(tc.text, m, behRemoved, true, nil, new(scratch))
			if !slices.Equal(got, tc.want) {
				t.Errorf("matches %q, want %q", got, tc.want)
			}
		})
	}
}
