package tokenizer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"
	"unsafe"

	"github.com/ardanlabs/jinja"
)

// maxTokenID bounds the ids a tokenizer.json may use, so that a corrupt file
// cannot make Load allocate without limit.
const maxTokenID = 1 << 20

// Tokenizer encodes text to token ids and decodes ids to text. It is immutable
// after Load and safe for concurrent use.
type Tokenizer struct {
	model        *bpe
	vocab        map[string]int // model vocabulary plus added tokens
	tokens       []string       // id -> token ("" for an unused id)
	special      []bool         // id -> a special added token
	added        []addedToken
	addedIdx     [256][]int // first byte -> indices into added, longest first
	norm         []normalizer
	pre          []preTokenizer
	dec          []decoder
	decRaw       []decoder // dec keeping invalid UTF-8 (DecodeBytes)
	decBytes     []string  // with the ByteLevel decoder alone: the raw bytes of each token
	prefix       []int     // ids added before the text by Encode(addSpecial)
	suffix       []int     // ids added after it
	bos, eos     int       // -1 when unknown
	chatTmpl     string
	chatCompiled *jinja.Template
	chatErr      error
	bosToken     string
	eosToken     string
}

// addedToken is an entry of tokenizer.json's added_tokens.
type addedToken struct {
	ID         int    `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	Normalized bool   `json:"normalized"`
	Special    bool   `json:"special"`
}

// fileJSON is the top level of tokenizer.json.
type fileJSON struct {
	AddedTokens   []addedToken    `json:"added_tokens"`
	Normalizer    json.RawMessage `json:"normalizer"`
	PreTokenizer  json.RawMessage `json:"pre_tokenizer"`
	PostProcessor json.RawMessage `json:"post_processor"`
	Decoder       json.RawMessage `json:"decoder"`
	Model         json.RawMessage `json:"model"`
}

// mergeJSONItem is one merge, written "a b" or ["a", "b"].
type mergeJSONItem struct{ left, right string }

func (m *mergeJSONItem) UnmarshalJSON(b []byte) error {
	if m.fastParse(b) {
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		l, r, ok := strings.Cut(s, " ")
		if !ok {
			return fmt.Errorf("merge %q has no space", s)
		}
		m.left, m.right = l, r
		return nil
	}
	var pair []string
	if err := json.Unmarshal(b, &pair); err != nil {
		return err
	}
	if len(pair) != 2 {
		return fmt.Errorf("merge has %d parts, want 2", len(pair))
	}
	m.left, m.right = pair[0], pair[1]
	return nil
}

// fastParse handles the common merge spellings without escapes.
func (m *mergeJSONItem) fastParse(b []byte) bool {
	if bytes.IndexByte(b, '\\') >= 0 {
		return false
	}
	if len(b) >= 2 && b[0] == '"' && b[len(b)-1] == '"' {
		l, r, ok := strings.Cut(string(b[1:len(b)-1]), " ")
		if !ok || strings.IndexByte(r, '"') >= 0 {
			return false
		}
		m.left, m.right = l, r
		return true
	}
	// ["a","b"] with optional spaces.
	s := strings.TrimSpace(string(b))
	if len(s) < 2 || s[0] != '[' || s[len(s)-1] != ']' {
		return false
	}
	l, r, ok := strings.Cut(s[1:len(s)-1], ",")
	if !ok {
		return false
	}
	l, r = strings.TrimSpace(l), strings.TrimSpace(r)
	if len(l) < 2 || len(r) < 2 || l[0] != '"' || l[len(l)-1] != '"' || r[0] != '"' || r[len(r)-1] != '"' {
		return false
	}
	l, r = l[1:len(l)-1], r[1:len(r)-1]
	if strings.IndexByte(l, '"') >= 0 || strings.IndexByte(r, '"') >= 0 {
		return false
	}
	m.left, m.right = l, r
	return true
}

// Load reads a Hugging Face tokenizer.json file. Without tokenizer_config.json
// (see LoadDir) the BOS token is the first one the post-processor adds, and
// the EOS token the one it appends or else the first of </s>, <|endoftext|>,
// <|end_of_text|>, <|eot_id|>, <|im_end|> and <eos> in the vocabulary.
//
// Supported: the BPE model (byte_fallback, fuse_unk, ignore_merges, dropout
// ignored); normalizers NFC, NFD, NFKC, NFKD, Lowercase, Prepend, Replace,
// Strip, Sequence; pre-tokenizers ByteLevel, Split, Metaspace, Digits,
// WhitespaceSplit, Punctuation, Sequence; post-processors TemplateProcessing,
// ByteLevel, RobertaProcessing, BertProcessing, Sequence; decoders ByteLevel,
// ByteFallback, Fuse, Replace, Strip, Metaspace, Sequence. Anything else is an
// ErrUnsupported error naming the component.
func Load(path string) (*Tokenizer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load tokenizer: %w", err)
	}
	t, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("load tokenizer %s: %w", path, err)
	}
	return t, nil
}

// Parse builds a Tokenizer from the bytes of a tokenizer.json file.
func Parse(data []byte) (*Tokenizer, error) {
	var f fileJSON
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if isNull(f.Model) {
		return nil, fmt.Errorf("%w: no model", ErrInvalid)
	}
	var mj bpeJSON
	if err := json.Unmarshal(f.Model, &mj); err != nil {
		var typ struct {
			Type string `json:"type"`
		}
		if json.Unmarshal(f.Model, &typ) == nil && typ.Type != "" && typ.Type != "BPE" {
			return nil, fmt.Errorf("%w: model type %q (only BPE)", ErrUnsupported, typ.Type)
		}
		return nil, fmt.Errorf("%w: model: %v", ErrInvalid, err)
	}
	t := &Tokenizer{bos: -1, eos: -1}
	var err error
	if t.norm, err = buildNormalizer(f.Normalizer); err != nil {
		return nil, err
	}
	var byteLevel bool
	if t.pre, byteLevel, err = buildPreTokenizer(f.PreTokenizer); err != nil {
		return nil, err
	}
	if t.dec, err = buildDecoder(f.Decoder); err != nil {
		return nil, err
	}
	if t.model, err = newBPE(&mj, byteLevel); err != nil {
		return nil, err
	}
	t.vocab = make(map[string]int, len(t.model.vocab)+len(f.AddedTokens))
	maxID := -1
	for tok, id := range t.model.vocab {
		t.vocab[tok] = id
		maxID = max(maxID, id)
	}
	for _, a := range f.AddedTokens {
		if a.ID < 0 || a.ID > maxTokenID {
			return nil, fmt.Errorf("%w: added token id %d out of range", ErrInvalid, a.ID)
		}
		maxID = max(maxID, a.ID)
	}
	t.tokens = make([]string, maxID+1)
	t.special = make([]bool, maxID+1)
	for tok, id := range t.model.vocab {
		t.tokens[id] = tok
	}
	for _, a := range f.AddedTokens {
		t.tokens[a.ID] = a.Content
		t.vocab[a.Content] = a.ID
		t.special[a.ID] = a.Special
		if a.Content == "" {
			continue
		}
		t.added = append(t.added, a)
	}
	sort.SliceStable(t.added, func(i, j int) bool { return len(t.added[i].Content) > len(t.added[j].Content) })
	for k, a := range t.added {
		c := a.Content[0]
		t.addedIdx[c] = append(t.addedIdx[c], k)
	}
	t.decRaw = rawDecoders(t.dec)
	if len(t.dec) == 1 {
		if _, ok := t.dec[0].(byteLevelDec); ok {
			t.decBytes = make([]string, len(t.tokens))
			var buf []byte
			for id, tok := range t.tokens {
				var ok bool
				if buf, ok = byteLevelBytes(buf[:0], tok); !ok {
					buf = append(buf[:0], tok...)
				}
				t.decBytes[id] = string(buf)
			}
		}
	}
	if t.prefix, t.suffix, err = buildPostProcessor(f.PostProcessor); err != nil {
		return nil, err
	}
	for _, id := range append(append([]int{}, t.prefix...), t.suffix...) {
		if id < 0 || id >= len(t.tokens) {
			return nil, fmt.Errorf("%w: post-processor id %d outside the vocabulary", ErrInvalid, id)
		}
	}
	if len(t.prefix) > 0 {
		t.bos = t.prefix[0]
		t.bosToken = t.tokens[t.bos]
	}
	if len(t.suffix) > 0 {
		t.eos = t.suffix[len(t.suffix)-1]
		t.eosToken = t.tokens[t.eos]
	} else {
		for _, name := range []string{"</s>", "<|endoftext|>", "<|end_of_text|>", "<|eot_id|>", "<|im_end|>", "<eos>"} {
			if id, ok := t.vocab[name]; ok {
				t.eos, t.eosToken = id, name
				break
			}
		}
	}
	return t, nil
}

// configJSON holds what LoadDir reads from tokenizer_config.json and
// special_tokens_map.json.
type configJSON struct {
	AddBOSToken  *bool           `json:"add_bos_token"`
	AddEOSToken  *bool           `json:"add_eos_token"`
	BOSToken     json.RawMessage `json:"bos_token"`
	EOSToken     json.RawMessage `json:"eos_token"`
	ChatTemplate json.RawMessage `json:"chat_template"`
}

// tokenName reads a special token written as "<s>" or {"content": "<s>", ...}.
func tokenName(raw json.RawMessage) (string, bool) {
	if isNull(raw) {
		return "", false
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, s != ""
	}
	var obj struct {
		Content string `json:"content"`
	}
	if json.Unmarshal(raw, &obj) == nil {
		return obj.Content, obj.Content != ""
	}
	return "", false
}

// chatTemplateText reads chat_template written as a string or as a list of
// {"name", "template"} (the one named "default" is used).
func chatTemplateText(raw json.RawMessage) (string, error) {
	if isNull(raw) {
		return "", nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	var list []struct {
		Name     string `json:"name"`
		Template string `json:"template"`
	}
	if err := json.Unmarshal(raw, &list); err != nil {
		return "", fmt.Errorf("%w: chat_template: %v", ErrInvalid, err)
	}
	for _, e := range list {
		if e.Name == "default" {
			return e.Template, nil
		}
	}
	if len(list) > 0 {
		return list[0].Template, nil
	}
	return "", nil
}

// LoadDir reads dir/tokenizer.json and, when present, dir/tokenizer_config.json
// and dir/special_tokens_map.json: the BOS and EOS tokens, add_bos_token and
// add_eos_token (which override the post-processor) and the chat_template
// (also read from dir/chat_template.jinja).
func LoadDir(dir string) (*Tokenizer, error) {
	t, err := Load(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		return nil, err
	}
	var cfg configJSON
	for _, name := range []string{"special_tokens_map.json", "tokenizer_config.json"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("load tokenizer: %w", err)
		}
		var c configJSON
		if err := json.Unmarshal(b, &c); err != nil {
			return nil, fmt.Errorf("load tokenizer %s: %w: %v", name, ErrInvalid, err)
		}
		if c.AddBOSToken != nil {
			cfg.AddBOSToken = c.AddBOSToken
		}
		if c.AddEOSToken != nil {
			cfg.AddEOSToken = c.AddEOSToken
		}
		if c.BOSToken != nil {
			cfg.BOSToken = c.BOSToken
		}
		if c.EOSToken != nil {
			cfg.EOSToken = c.EOSToken
		}
		if c.ChatTemplate != nil {
			cfg.ChatTemplate = c.ChatTemplate
		}
	}
	if name, ok := tokenName(cfg.BOSToken); ok {
		if id, ok := t.vocab[name]; ok {
			t.bos, t.bosToken = id, name
		}
	} else if cfg.BOSToken != nil && isNull(cfg.BOSToken) && len(t.prefix) == 0 {
		t.bos, t.bosToken = -1, ""
	}
	if name, ok := tokenName(cfg.EOSToken); ok {
		if id, ok := t.vocab[name]; ok {
			t.eos, t.eosToken = id, name
		}
	}
	if cfg.AddBOSToken != nil {
		t.prefix = nil
		if *cfg.AddBOSToken && t.bos >= 0 {
			t.prefix = []int{t.bos}
		}
	}
	if cfg.AddEOSToken != nil {
		t.suffix = nil
		if *cfg.AddEOSToken && t.eos >= 0 {
			t.suffix = []int{t.eos}
		}
	}
	if t.chatTmpl, err = chatTemplateText(cfg.ChatTemplate); err != nil {
		return nil, fmt.Errorf("load tokenizer %s: %w", dir, err)
	}
	if t.chatTmpl == "" {
		if b, err := os.ReadFile(filepath.Join(dir, "chat_template.jinja")); err == nil {
			t.chatTmpl = string(b)
		}
	}
	if t.chatTmpl != "" {
		t.chatCompiled, t.chatErr = compileTemplate(t.chatTmpl)
	}
	return t, nil
}

// VocabSize is one more than the largest token id, added tokens included.
func (t *Tokenizer) VocabSize() int { return len(t.tokens) }

// BOS returns the beginning-of-sequence token, if the tokenizer has one.
func (t *Tokenizer) BOS() (int, bool) { return t.bos, t.bos >= 0 }

// EOS returns the end-of-sequence token, if the tokenizer has one.
func (t *Tokenizer) EOS() (int, bool) { return t.eos, t.eos >= 0 }

// TokenID returns the id of a token spelled as in the vocabulary ("▁the", "Ġthe", "<s>").
func (t *Tokenizer) TokenID(tok string) (int, bool) {
	id, ok := t.vocab[tok]
	return id, ok
}

// Token returns the vocabulary spelling of id, or "" when id is not a token.
func (t *Tokenizer) Token(id int) string {
	if id < 0 || id >= len(t.tokens) {
		return ""
	}
	return t.tokens[id]
}

// IsSpecial reports whether id is a special added token (skipped by Decode
// with skipSpecial).
func (t *Tokenizer) IsSpecial(id int) bool {
	return id >= 0 && id < len(t.special) && t.special[id]
}

// segment is a stretch of input: text for the model, or one added token.
type segment struct {
	text  string
	id    int // -1 for text
	first bool
}

// splitAdded cuts text at the added tokens, leftmost first and longest at a
// position, honouring lstrip, rstrip and single_word.
func (t *Tokenizer) splitAdded(text string, dst []segment) []segment {
	start := 0 // start of the pending text segment
	emitText := func(end int) {
		if end > start {
			dst = append(dst, segment{text: text[start:end], id: -1, first: start == 0})
		}
	}
	for i := 0; i < len(text); {
		cands := t.addedIdx[text[i]]
		matched := false
		for _, k := range cands {
			a := &t.added[k]
			if !strings.HasPrefix(text[i:], a.Content) {
				continue
			}
			end := i + len(a.Content)
			if a.SingleWord && (isWordBefore(text, i) || isWordAfter(text, end)) {
				continue
			}
			mStart := i
			if a.LStrip {
				for mStart > start {
					r, n := utf8.DecodeLastRuneInString(text[start:mStart])
					if !unicode.IsSpace(r) {
						break
					}
					mStart -= n
				}
			}
			if a.RStrip {
				end = spanWhile(text, end, unicode.IsSpace)
			}
			emitText(mStart)
			dst = append(dst, segment{id: a.ID})
			start, i, matched = end, end, true
			break
		}
		if !matched {
			i++
		}
	}
	emitText(len(text))
	return dst
}

func isWordBefore(s string, i int) bool {
	r, n := utf8.DecodeLastRuneInString(s[:i])
	return n > 0 && (unicode.IsLetter(r) || unicode.IsNumber(r) || r == '_')
}

func isWordAfter(s string, i int) bool {
	r, n := utf8.DecodeRuneInString(s[i:])
	return n > 0 && (unicode.IsLetter(r) || unicode.IsNumber(r) || r == '_')
}

// Encode returns the token ids of text. Added and special tokens written in
// the text are recognized. With addSpecial the post-processor's tokens (BOS,
// and EOS where configured) are added around the text.
func (t *Tokenizer) Encode(text string, addSpecial bool) []int {
	ids := make([]int, 0, len(text)/3+4)
	if addSpecial {
		ids = append(ids, t.prefix...)
	}
	sc := scratchPool.Get().(*scratch)
	var segBuf [8]segment
	for _, seg := range t.splitAdded(text, segBuf[:0]) {
		if seg.id >= 0 {
			ids = append(ids, seg.id)
			continue
		}
		s := seg.text
		for _, n := range t.norm {
			s = n(s)
		}
		if s == "" {
			continue
		}
		sc.a = append(sc.a[:0], piece{text: s, first: seg.first})
		for _, p := range t.pre {
			sc.b = p.apply(sc.a, sc.b[:0], sc)
			sc.a, sc.b = sc.b, sc.a
		}
		for _, pc := range sc.a {
			ids = t.model.encodePiece(pc.text, ids)
		}
	}
	clear(sc.a)
	clear(sc.b)
	clear(sc.strs)
	scratchPool.Put(sc)
	if addSpecial {
		ids = append(ids, t.suffix...)
	}
	return ids
}

// Decode returns the text of ids. Ids outside the vocabulary are skipped; with
// skipSpecial so are special tokens. The result is always valid UTF-8.
func (t *Tokenizer) Decode(ids []int, skipSpecial bool) string {
	buf := t.decode(ids, skipSpecial, t.dec)
	if utf8.Valid(buf) {
		return unsafeString(buf)
	}
	return unsafeString(appendLossy(make([]byte, 0, len(buf)+8), buf))
}

// DecodeBytes returns the bytes of ids as Decode does, except that bytes
// that are not valid UTF-8 (a token holding part of a character) stay as
// they are instead of becoming U+FFFD: the bytes of OpenAI's logprobs.
func (t *Tokenizer) DecodeBytes(ids []int, skipSpecial bool) []byte {
	return t.decode(ids, skipSpecial, t.decRaw)
}

// decode is the bytes of ids through decs (t.dec, or t.decRaw).
func (t *Tokenizer) decode(ids []int, skipSpecial bool, decs []decoder) []byte {
	if t.decBytes != nil {
		n := 0
		for _, id := range ids {
			if id >= 0 && id < len(t.decBytes) {
				n += len(t.decBytes[id])
			}
		}
		buf := make([]byte, 0, n)
		for _, id := range ids {
			if id < 0 || id >= len(t.decBytes) || (skipSpecial && t.special[id]) {
				continue
			}
			buf = append(buf, t.decBytes[id]...)
		}
		return buf
	}
	toks := make([]string, 0, len(ids))
	for _, id := range ids {
		if id < 0 || id >= len(t.tokens) || (t.tokens[id] == "" && !t.inVocab(id)) {
			continue
		}
		if skipSpecial && t.special[id] {
			continue
		}
		toks = append(toks, t.tokens[id])
	}
	for _, d := range decs {
		toks = d.decode(toks)
	}
	n := 0
	for _, s := range toks {
		n += len(s)
	}
	buf := make([]byte, 0, n)
	for _, s := range toks {
		buf = append(buf, s...)
	}
	return buf
}

// unsafeString returns b as a string without copying; b must not change after.
func unsafeString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// inVocab reports whether id is a token whose spelling is the empty string.
func (t *Tokenizer) inVocab(id int) bool {
	got, ok := t.vocab[""]
	return ok && got == id
}
