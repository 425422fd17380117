package tokenizer

import (
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// streamAll decodes ids one at a time and returns the concatenated pieces,
// failing if any piece is not valid UTF-8.
func streamAll(t testing.TB, tok *Tokenizer, ids []int, skipSpecial bool) string {
	t.Helper()
	d := tok.NewStreamDecoder(skipSpecial)
	var b strings.Builder
	for _, id := range ids {
		s := d.Add(id)
		if !utf8.ValidString(s) {
			t.Fatalf("Add(%d) returned invalid UTF-8 %q", id, s)
		}
		b.WriteString(s)
	}
	b.WriteString(d.Flush())
	return b.String()
}

var streamTexts = []string{
	"Hello world",
	" leading space and  double  spaces ",
	"naïve café – “quotes” 😀 日本語",
	"🚀 (normal) 😶\u200d🌫️ ✅ 🦙🦙",
	"line1\nline2\n\n\tend",
	"",
	" ",
}

func TestStreamDecoderMatchesDecode(t *testing.T) {
	toks := map[string]func(testing.TB) *Tokenizer{"stories260K": stories, "llama2": llama2, "qwen3": qwen3}
	for name, get := range toks {
		t.Run(name, func(t *testing.T) {
			tok := get(t)
			for _, text := range streamTexts {
				ids := tok.Encode(text, true)
				for _, skip := range []bool{true, false} {
					want := tok.Decode(ids, skip)
					if got := streamAll(t, tok, ids, skip); got != want {
						t.Errorf("%q skip=%v: stream %q, Decode %q", text, skip, got, want)
					}
				}
			}
		})
	}
}

func TestStreamDecoderHoldsPartialUTF8(t *testing.T) {
	tok := llama2(t)
	// "😀" is four byte-fallback tokens; nothing may come out before the last.
	ids := tok.Encode("a 😀b", false)
	d := tok.NewStreamDecoder(true)
	var out []string
	for _, id := range ids {
		out = append(out, d.Add(id))
	}
	out = append(out, d.Flush())
	if got := strings.Join(out, ""); got != "a 😀b" {
		t.Fatalf("stream = %q", got)
	}
	for _, s := range out {
		if strings.ContainsRune(s, utf8.RuneError) {
			t.Errorf("piece %q holds U+FFFD: %q", s, out)
		}
	}
	// An incomplete sequence at the end of the stream is flushed as U+FFFD.
	f0, _ := tok.TokenID("<0xF0>")
	d = tok.NewStreamDecoder(true)
	if s := d.Add(f0); s != "" {
		t.Errorf("Add(<0xF0>) = %q, want held back", s)
	}
	if s := d.Flush(); s != "\uFFFD" {
		t.Errorf("Flush = %q, want U+FFFD", s)
	}
}

func TestEncodeSpecialTokens(t *testing.T) {
	q := qwen3(t)
	start, _ := q.TokenID("<|im_start|>")
	end, _ := q.TokenID("<|im_end|>")
	ids := q.Encode("<|im_start|>user\nhi<|im_end|>", false)
	if ids[0] != start || ids[len(ids)-1] != end {
		t.Errorf("Encode = %v, want <|im_start|> ... <|im_end|>", ids)
	}
	if got := q.Decode(ids, true); got != "user\nhi" {
		t.Errorf("Decode skipSpecial = %q", got)
	}
	if !q.IsSpecial(end) || q.IsSpecial(ids[1]) {
		t.Errorf("IsSpecial wrong")
	}
	if id, ok := q.EOS(); !ok || id != end {
		t.Errorf("qwen3 EOS = %d %v, want <|im_end|> %d (tokenizer_config)", id, ok, end)
	}
	if _, ok := q.BOS(); ok {
		t.Errorf("qwen3 has no BOS")
	}
	if q.VocabSize() != 151669 {
		t.Errorf("qwen3 VocabSize = %d, want 151669", q.VocabSize())
	}

	l := llama2(t)
	bos, ok := l.BOS()
	if !ok || bos != 1 {
		t.Fatalf("llama2 BOS = %d %v", bos, ok)
	}
	if eos, ok := l.EOS(); !ok || eos != 2 {
		t.Errorf("llama2 EOS = %d %v", eos, ok)
	}
	ids = l.Encode("<s>[INST] Hi [/INST]", false)
	if ids[0] != 1 {
		t.Errorf("llama2 Encode(<s>...) = %v, want leading 1", ids)
	}
	if got := l.Decode([]int{1, 15043, 3186, 2}, false); got != "<s> Hello world</s>" {
		t.Errorf("llama2 Decode with specials = %q", got)
	}
	if l.Token(15043) != "▁Hello" || l.Token(-1) != "" || l.Token(1<<30) != "" {
		t.Errorf("Token lookups wrong")
	}
	if got := l.Decode([]int{-5, 1 << 30, 15043}, true); got != "Hello" {
		t.Errorf("Decode skips unknown ids: %q", got)
	}
}

func TestByteLevelJSON(t *testing.T) {
	b, err := ByteLevelJSON([]string{"<|im_start|>", "<|im_end|>"})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := Parse(b)
	if err != nil {
		t.Fatalf("Parse(ByteLevelJSON): %v", err)
	}
	if tok.VocabSize() != 256+5 {
		t.Errorf("VocabSize = %d, want 261", tok.VocabSize())
	}
	if tok.Token(0) != "!" || tok.Token(255) != "Ń" {
		t.Errorf("byte order: Token(0)=%q Token(255)=%q", tok.Token(0), tok.Token(255))
	}
	if id, ok := tok.BOS(); !ok || tok.Token(id) != "<s>" {
		t.Errorf("BOS = %d %v", id, ok)
	}
	if id, ok := tok.EOS(); !ok || tok.Token(id) != "</s>" {
		t.Errorf("EOS = %d %v", id, ok)
	}
	text := "<|im_start|>héllo 😀\n"
	ids := tok.Encode(text, true)
	if len(ids) != 1+1+len("héllo 😀\n") || ids[0] != 256 || ids[1] != 259 {
		t.Errorf("Encode = %v", ids)
	}
	if got := tok.Decode(ids, false); got != "<s>"+text {
		t.Errorf("Decode = %q", got)
	}
	for _, bad := range [][]string{{""}, {"<s>"}} {
		if _, err := ByteLevelJSON(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("ByteLevelJSON(%q) err = %v, want ErrInvalid", bad, err)
		}
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name    string
		json    string
		wantErr error
		mention string
	}{
		{name: "not json", json: "{", wantErr: ErrInvalid},
		{name: "no model", json: `{}`, wantErr: ErrInvalid},
		{name: "wordpiece", json: `{"model": {"type": "WordPiece", "vocab": {"a": 0}, "unk_token": "a", "max_input_chars_per_word": 100}}`, wantErr: ErrUnsupported, mention: "WordPiece"},
		{name: "unigram", json: `{"model": {"type": "Unigram", "vocab": [["a", 0.0]]}}`, wantErr: ErrUnsupported, mention: "Unigram"},
		{name: "bert normalizer", json: `{"normalizer": {"type": "BertNormalizer"}, "model": {"type": "BPE", "vocab": {}, "merges": []}}`, wantErr: ErrUnsupported, mention: "BertNormalizer"},
		{name: "whitespace pre-tokenizer", json: `{"pre_tokenizer": {"type": "Whitespace"}, "model": {"type": "BPE", "vocab": {}, "merges": []}}`, wantErr: ErrUnsupported, mention: "Whitespace"},
		{name: "wordpiece decoder", json: `{"decoder": {"type": "WordPiece"}, "model": {"type": "BPE", "vocab": {}, "merges": []}}`, wantErr: ErrUnsupported, mention: "WordPiece"},
		{name: "bad regex", json: `{"pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(?<=a)b"}, "behavior": "Isolated"}, "model": {"type": "BPE", "vocab": {}, "merges": []}}`, wantErr: ErrUnsupported, mention: "regex"},
		{name: "merge outside vocab", json: `{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]}}`, wantErr: ErrInvalid},
		{name: "unk outside vocab", json: `{"model": {"type": "BPE", "unk_token": "<unk>", "vocab": {"a": 0}, "merges": []}}`, wantErr: ErrInvalid},
		{name: "huge id", json: `{"model": {"type": "BPE", "vocab": {"a": 99999999999}, "merges": []}}`, wantErr: ErrInvalid},
		{name: "suffix", json: `{"model": {"type": "BPE", "end_of_word_suffix": "</w>", "vocab": {}, "merges": []}}`, wantErr: ErrUnsupported},
		{name: "minimal", json: `{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": [["a", "b"]]}}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := Parse([]byte(tc.json))
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				if got := tok.Encode("abab", false); !slices.Equal(got, []int{2, 2}) {
					t.Errorf("Encode = %v", got)
				}
				return
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.mention) {
				t.Errorf("err %q does not name %q", err, tc.mention)
			}
		})
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.json")); err == nil {
		t.Error("Load of a missing file succeeded")
	}
}

// Cutting a SentencePiece-style word at metaspace runs gives the same tokens
// as merging the whole word at once.
func TestChunkAtMetaMatchesWholeWord(t *testing.T) {
	for name, get := range map[string]func(testing.TB) *Tokenizer{"llama2": llama2, "stories260K": stories} {
		t.Run(name, func(t *testing.T) {
			tok := get(t)
			if !tok.model.chunkAtMeta {
				t.Fatal("chunkAtMeta should be on for this vocabulary")
			}
			for _, text := range append(streamTexts, benchText[:4000], "a  b   c    d\n\n e", "▁▁x▁ y") {
				s := text
				for _, n := range tok.norm {
					s = n(s)
				}
				var whole []int
				for _, id := range tok.model.encodeWord(s) {
					whole = append(whole, int(id))
				}
				if got := tok.model.encodePiece(s, nil); !slices.Equal(got, whole) {
					t.Errorf("%q: chunked %v, whole %v", text, got, whole)
				}
			}
		})
	}
}

// A Tokenizer is shared by concurrent requests; the BPE cache must hold up.
func TestConcurrentEncode(t *testing.T) {
	tok := qwen3(t)
	texts := append([]string{benchText[:3000]}, streamTexts...)
	want := make([][]int, len(texts))
	for k, s := range texts {
		want[k] = tok.Encode(s, false)
	}
	done := make(chan error, 4)
	for g := 0; g < 4; g++ {
		go func() {
			for k, s := range texts {
				if got := tok.Encode(s, false); !slices.Equal(got, want[k]) {
					done <- errors.New("concurrent Encode differs for " + s)
					return
				}
			}
			done <- nil
		}()
	}
	for g := 0; g < 4; g++ {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

func TestStreamDecoderAfter(t *testing.T) {
	tests := []struct {
		name   string
		tok    func(testing.TB) *Tokenizer
		prompt string
		gen    string
	}{
		{name: "llama2 keeps the space", tok: llama2, prompt: "Hello", gen: " world 😀"},
		{name: "qwen3", tok: qwen3, prompt: "Hello", gen: " world 😀"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok := tc.tok(t)
			prompt := tok.Encode(tc.prompt, true)
			all := tok.Encode(tc.prompt+tc.gen, true)
			if !slices.Equal(all[:len(prompt)], prompt) {
				t.Fatalf("prompt ids %v are not a prefix of %v", prompt, all)
			}
			d := tok.NewStreamDecoderAfter(true, prompt)
			var b strings.Builder
			for _, id := range all[len(prompt):] {
				b.WriteString(d.Add(id))
			}
			b.WriteString(d.Flush())
			if b.String() != tc.gen {
				t.Errorf("stream after prompt = %q, want %q", b.String(), tc.gen)
			}
		})
	}
}
