package tokenizer

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// componentJSON holds the fields of any normalizer, pre-tokenizer,
// post-processor or decoder object in tokenizer.json; type says which.
type componentJSON struct {
	Type             string            `json:"type"`
	Normalizers      []json.RawMessage `json:"normalizers"`
	Pretokenizers    []json.RawMessage `json:"pretokenizers"`
	Decoders         []json.RawMessage `json:"decoders"`
	Processors       []json.RawMessage `json:"processors"`
	Prepend          string            `json:"prepend"`
	Pattern          *patternJSON      `json:"pattern"`
	Content          string            `json:"content"`
	Behavior         string            `json:"behavior"`
	Invert           bool              `json:"invert"`
	AddPrefixSpace   *bool             `json:"add_prefix_space"`
	UseRegex         *bool             `json:"use_regex"`
	Replacement      string            `json:"replacement"`
	PrependScheme    string            `json:"prepend_scheme"`
	Split            *bool             `json:"split"`
	IndividualDigits bool              `json:"individual_digits"`
	StripLeft        bool              `json:"strip_left"`
	StripRight       bool              `json:"strip_right"`
	Start            int               `json:"start"`
	Stop             int               `json:"stop"`
	Single           []templateItem    `json:"single"`
	SpecialTokens    map[string]struct {
		IDs []int `json:"ids"`
	} `json:"special_tokens"`
	Sep []json.RawMessage `json:"sep"`
	Cls []json.RawMessage `json:"cls"`
}

type patternJSON struct {
	String *string `json:"String"`
	Regex  *string `json:"Regex"`
}

func parseComponent(raw json.RawMessage, what string) (*componentJSON, error) {
	var c componentJSON
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalid, what, err)
	}
	return &c, nil
}

func isNull(raw json.RawMessage) bool {
	s := strings.TrimSpace(string(raw))
	return s == "" || s == "null"
}

// ---- normalizers ----

type normalizer func(string) string

func buildNormalizer(raw json.RawMessage) ([]normalizer, error) {
	if isNull(raw) {
		return nil, nil
	}
	c, err := parseComponent(raw, "normalizer")
	if err != nil {
		return nil, err
	}
	switch c.Type {
	case "Sequence":
		var out []normalizer
		for _, sub := range c.Normalizers {
			n, err := buildNormalizer(sub)
			if err != nil {
				return nil, err
			}
			out = append(out, n...)
		}
		return out, nil
	case "NFC":
		return []normalizer{norm.NFC.String}, nil
	case "NFD":
		return []normalizer{norm.NFD.String}, nil
	case "NFKC":
		return []normalizer{norm.NFKC.String}, nil
	case "NFKD":
		return []normalizer{norm.NFKD.String}, nil
	case "Lowercase":
		return []normalizer{strings.ToLower}, nil
	case "Prepend":
		p := c.Prepend
		return []normalizer{func(s string) string {
			if s == "" {
				return s
			}
			return p + s
		}}, nil
	case "Replace":
		f, err := replacer(c.Pattern, c.Content, "Replace normalizer")
		if err != nil {
			return nil, err
		}
		return []normalizer{f}, nil
	case "Strip":
		l, r := c.StripLeft, c.StripRight
		return []normalizer{func(s string) string {
			if l {
				s = strings.TrimLeftFunc(s, unicode.IsSpace)
			}
			if r {
				s = strings.TrimRightFunc(s, unicode.IsSpace)
			}
			return s
		}}, nil
	}
	return nil, fmt.Errorf("%w: normalizer %q", ErrUnsupported, c.Type)
}

func replacer(p *patternJSON, content, what string) (func(string) string, error) {
	switch {
	case p == nil:
		return nil, fmt.Errorf("%w: %s without pattern", ErrInvalid, what)
	case p.String != nil:
		old := *p.String
		if old == "" {
			return func(s string) string { return s }, nil
		}
		return func(s string) string { return strings.ReplaceAll(s, old, content) }, nil
	case p.Regex != nil:
		re, err := regexp.Compile(*p.Regex)
		if err != nil {
			return nil, fmt.Errorf("%w: %s regex %q: %v", ErrUnsupported, what, *p.Regex, err)
		}
		return func(s string) string { return re.ReplaceAllLiteralString(s, content) }, nil
	}
	return nil, fmt.Errorf("%w: %s pattern is neither String nor Regex", ErrInvalid, what)
}

// ---- pre-tokenizers ----

// piece is a span of text on its way to the model; first marks the piece that
// starts at offset 0 of the original input (Metaspace prepend_scheme "first").
type piece struct {
	text  string
	first bool
}

type preTokenizer interface {
	// apply appends the pieces of in to out, using sc's buffers.
	apply(in, out []piece, sc *scratch) []piece
}

// preTokenizers returns the pre-tokenizer chain and whether it ends with
// ByteLevel (the model then works on the GPT-2 byte alphabet).
func buildPreTokenizer(raw json.RawMessage) ([]preTokenizer, bool, error) {
	if isNull(raw) {
		return nil, false, nil
	}
	c, err := parseComponent(raw, "pre_tokenizer")
	if err != nil {
		return nil, false, err
	}
	if c.Type == "Sequence" {
		var out []preTokenizer
		byteLevel := false
		for k, sub := range c.Pretokenizers {
			if byteLevel {
				return nil, false, fmt.Errorf("%w: pre-tokenizer after ByteLevel in a Sequence", ErrUnsupported)
			}
			p, bl, err := buildPreTokenizer(sub)
			if err != nil {
				return nil, false, fmt.Errorf("pre_tokenizer %d: %w", k, err)
			}
			out = append(out, p...)
			byteLevel = bl
		}
		return out, byteLevel, nil
	}
	p, err := buildOnePreTokenizer(c)
	if err != nil {
		return nil, false, err
	}
	return []preTokenizer{p}, c.Type == "ByteLevel", nil
}

func buildOnePreTokenizer(c *componentJSON) (preTokenizer, error) {
	switch c.Type {
	case "ByteLevel":
		p := byteLevelPre{addPrefixSpace: c.AddPrefixSpace != nil && *c.AddPrefixSpace, useRegex: c.UseRegex == nil || *c.UseRegex}
		return p, nil
	case "Split":
		beh, err := parseBehavior(c.Behavior)
		if err != nil {
			return nil, err
		}
		var m matcher
		switch {
		case c.Pattern == nil:
			return nil, fmt.Errorf("%w: Split without pattern", ErrInvalid)
		case c.Pattern.String != nil:
			m = literalMatcher{*c.Pattern.String}
		case c.Pattern.Regex != nil:
			if m, err = newRegexMatcher(*c.Pattern.Regex); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("%w: Split pattern is neither String nor Regex", ErrInvalid)
		}
		return splitPre{m: m, beh: beh, invert: c.Invert}, nil
	case "Metaspace":
		repl, err := metaspaceReplacement(c)
		if err != nil {
			return nil, err
		}
		scheme, err := prependScheme(c)
		if err != nil {
			return nil, err
		}
		return metaspacePre{repl: string(repl), scheme: scheme, split: c.Split == nil || *c.Split}, nil
	case "Digits":
		beh := behContiguous
		if c.IndividualDigits {
			beh = behIsolated
		}
		return splitPre{m: runeMatcher(unicode.IsNumber), beh: beh}, nil
	case "WhitespaceSplit":
		return splitPre{m: runeMatcher(unicode.IsSpace), beh: behRemoved}, nil
	case "Punctuation":
		beh := behIsolated
		if c.Behavior != "" {
			var err error
			if beh, err = parseBehavior(c.Behavior); err != nil {
				return nil, err
			}
		}
		return splitPre{m: runeMatcher(isPunct), beh: beh}, nil
	}
	return nil, fmt.Errorf("%w: pre-tokenizer %q", ErrUnsupported, c.Type)
}

// isPunct is Rust's is_ascii_punctuation || is_punctuation.
func isPunct(r rune) bool {
	return (r < utf8.RuneSelf && unicode.IsSymbol(r)) || unicode.IsPunct(r)
}

func metaspaceReplacement(c *componentJSON) (rune, error) {
	if c.Replacement == "" {
		return '▁', nil
	}
	r, n := utf8.DecodeRuneInString(c.Replacement)
	if n != len(c.Replacement) {
		return 0, fmt.Errorf("%w: Metaspace replacement %q is not one character", ErrInvalid, c.Replacement)
	}
	return r, nil
}

type prepend int

const (
	prependAlways prepend = iota
	prependFirst
	prependNever
)

func prependScheme(c *componentJSON) (prepend, error) {
	switch c.PrependScheme {
	case "always":
		return prependAlways, nil
	case "first":
		return prependFirst, nil
	case "never":
		return prependNever, nil
	case "":
		if c.AddPrefixSpace != nil && !*c.AddPrefixSpace {
			return prependNever, nil
		}
		return prependAlways, nil
	}
	return 0, fmt.Errorf("%w: Metaspace prepend_scheme %q", ErrUnsupported, c.PrependScheme)
}

// runeMatcher matches every rune satisfying f on its own.
type runeMatcher func(rune) bool

func (f runeMatcher) find(s string, dst [][2]int) [][2]int {
	for i, r := range s {
		if f(r) {
			dst = append(dst, [2]int{i, i + utf8.RuneLen(r)})
		}
	}
	return dst
}

type splitPre struct {
	m      matcher
	beh    splitBehavior
	invert bool
}

func (p splitPre) apply(in, out []piece, sc *scratch) []piece {
	for _, pc := range in {
		sc.strs = splitBy(pc.text, p.m, p.beh, p.invert, sc.strs[:0], sc)
		for k, s := range sc.strs {
			out = append(out, piece{text: s, first: pc.first && k == 0 && strings.HasPrefix(pc.text, s)})
		}
	}
	return out
}

type byteLevelPre struct {
	addPrefixSpace bool
	useRegex       bool
}

func (p byteLevelPre) apply(in, out []piece, sc *scratch) []piece {
	for _, pc := range in {
		s := pc.text
		if p.addPrefixSpace && !strings.HasPrefix(s, " ") {
			s = " " + s
		}
		if !p.useRegex {
			out = append(out, piece{text: s, first: pc.first})
			continue
		}
		sc.strs = splitBy(s, wordScanner{}, behIsolated, false, sc.strs[:0], sc)
		for k, w := range sc.strs {
			out = append(out, piece{text: w, first: pc.first && k == 0})
		}
	}
	return out
}

type metaspacePre struct {
	repl   string
	scheme prepend
	split  bool
}

func (p metaspacePre) apply(in, out []piece, sc *scratch) []piece {
	for _, pc := range in {
		s := strings.ReplaceAll(pc.text, " ", p.repl)
		if !strings.HasPrefix(s, p.repl) && (p.scheme == prependAlways || (p.scheme == prependFirst && pc.first)) {
			s = p.repl + s
		}
		if !p.split {
			out = append(out, piece{text: s, first: pc.first})
			continue
		}
		sc.strs = splitBy(s, literalMatcher{p.repl}, behMergedWithNext, false, sc.strs[:0], sc)
		for k, w := range sc.strs {
			out = append(out, piece{text: w, first: pc.first && k == 0})
		}
	}
	return out
}

// ---- post-processor ----

// templateItem is one entry of TemplateProcessing's "single" list.
type templateItem struct {
	SpecialToken *struct {
		ID string `json:"id"`
	} `json:"SpecialToken"`
	Sequence *struct {
		ID string `json:"id"`
	} `json:"Sequence"`
}

// buildPostProcessor returns the ids placed before and after a single sequence
// when special tokens are added.
func buildPostProcessor(raw json.RawMessage) (prefix, suffix []int, err error) {
	if isNull(raw) {
		return nil, nil, nil
	}
	c, err := parseComponent(raw, "post_processor")
	if err != nil {
		return nil, nil, err
	}
	switch c.Type {
	case "ByteLevel":
		return nil, nil, nil
	case "Sequence":
		for k, sub := range c.Processors {
			p, s, err := buildPostProcessor(sub)
			if err != nil {
				return nil, nil, fmt.Errorf("post_processor %d: %w", k, err)
			}
			prefix = append(prefix, p...)
			suffix = append(s, suffix...)
		}
		return prefix, suffix, nil
	case "TemplateProcessing":
		seen := false
		for _, it := range c.Single {
			switch {
			case it.Sequence != nil:
				if seen {
					return nil, nil, fmt.Errorf("%w: TemplateProcessing with two sequences in single", ErrUnsupported)
				}
				seen = true
			case it.SpecialToken != nil:
				st, ok := c.SpecialTokens[it.SpecialToken.ID]
				if !ok {
					return nil, nil, fmt.Errorf("%w: TemplateProcessing special token %q not listed", ErrInvalid, it.SpecialToken.ID)
				}
				if seen {
					suffix = append(suffix, st.IDs...)
				} else {
					prefix = append(prefix, st.IDs...)
				}
			}
		}
		return prefix, suffix, nil
	case "RobertaProcessing", "BertProcessing":
		cls, err := pairID(c.Cls)
		if err != nil {
			return nil, nil, err
		}
		sep, err := pairID(c.Sep)
		if err != nil {
			return nil, nil, err
		}
		return []int{cls}, []int{sep}, nil
	}
	return nil, nil, fmt.Errorf("%w: post-processor %q", ErrUnsupported, c.Type)
}

// pairID reads a ["token", id] pair of Roberta/BertProcessing.
func pairID(raw []json.RawMessage) (int, error) {
	if len(raw) != 2 {
		return 0, fmt.Errorf("%w: post-processor token pair", ErrInvalid)
	}
	var id int
	if err := json.Unmarshal(raw[1], &id); err != nil {
		return 0, fmt.Errorf("%w: post-processor token id: %v", ErrInvalid, err)
	}
	return id, nil
}

// ---- decoders ----

type decoder interface {
	decode(toks []string) []string
}

func buildDecoder(raw json.RawMessage) ([]decoder, error) {
	if isNull(raw) {
		return nil, nil
	}
	c, err := parseComponent(raw, "decoder")
	if err != nil {
		return nil, err
	}
	switch c.Type {
	case "Sequence":
		var out []decoder
		for k, sub := range c.Decoders {
			d, err := buildDecoder(sub)
			if err != nil {
				return nil, fmt.Errorf("decoder %d: %w", k, err)
			}
			out = append(out, d...)
		}
		return out, nil
	case "ByteLevel":
		return []decoder{byteLevelDec{}}, nil
	case "ByteFallback":
		return []decoder{byteFallbackDec{}}, nil
	case "Fuse":
		return []decoder{fuseDec{}}, nil
	case "Replace":
		f, err := replacer(c.Pattern, c.Content, "Replace decoder")
		if err != nil {
			return nil, err
		}
		return []decoder{mapDec(f)}, nil
	case "Strip":
		r, n := utf8.DecodeRuneInString(c.Content)
		if n == 0 || n != len(c.Content) {
			return nil, fmt.Errorf("%w: Strip decoder content %q is not one character", ErrInvalid, c.Content)
		}
		return []decoder{stripDec{r: r, start: c.Start, stop: c.Stop}}, nil
	case "Metaspace":
		repl, err := metaspaceReplacement(c)
		if err != nil {
			return nil, err
		}
		scheme, err := prependScheme(c)
		if err != nil {
			return nil, err
		}
		return []decoder{metaspaceDec{repl: repl, stripFirst: scheme != prependNever}}, nil
	}
	return nil, fmt.Errorf("%w: decoder %q", ErrUnsupported, c.Type)
}

// byteLevelDec maps byte-level tokens back to bytes and fuses them into one
// valid UTF-8 string (raw: the bytes as they are, for DecodeBytes).
type byteLevelDec struct{ raw bool }

func (d byteLevelDec) decode(toks []string) []string {
	var buf []byte
	for _, t := range toks {
		var ok bool
		if buf, ok = byteLevelBytes(buf, t); !ok {
			buf = append(buf, t...)
		}
	}
	if d.raw {
		return []string{string(buf)}
	}
	return []string{string(appendLossy(nil, buf))}
}

// byteFallbackDec turns runs of <0xXX> tokens into text. Each maximal invalid
// UTF-8 subpart of a run becomes one U+FFFD (the reference implementation
// replaces every byte of an invalid run, valid characters included; this keeps
// them, so that incremental decoding agrees with Decode). Raw, a run stays
// its bytes (for DecodeBytes).
type byteFallbackDec struct{ raw bool }

func byteToken(t string) (byte, bool) {
	if len(t) != 6 || t[:3] != "<0x" || t[5] != '>' {
		return 0, false
	}
	var v byte
	for _, c := range []byte(t[3:5]) {
		switch {
		case c >= '0' && c <= '9':
			v = v<<4 | (c - '0')
		case c >= 'A' && c <= 'F':
			v = v<<4 | (c - 'A' + 10)
		case c >= 'a' && c <= 'f':
			v = v<<4 | (c - 'a' + 10)
		default:
			return 0, false
		}
	}
	return v, true
}

func (d byteFallbackDec) decode(toks []string) []string {
	out := make([]string, 0, len(toks))
	var run []byte
	flush := func() {
		if len(run) == 0 {
			return
		}
		if d.raw {
			out = append(out, string(run))
		} else {
			out = append(out, string(appendLossy(nil, run)))
		}
		run = run[:0]
	}
	for _, t := range toks {
		if b, ok := byteToken(t); ok {
			run = append(run, b)
			continue
		}
		flush()
		out = append(out, t)
	}
	flush()
	return out
}

// rawDecoders is ds with the decoders that replace invalid UTF-8 made to
// keep the bytes instead.
func rawDecoders(ds []decoder) []decoder {
	out := make([]decoder, len(ds))
	for k, d := range ds {
		switch d.(type) {
		case byteLevelDec:
			d = byteLevelDec{raw: true}
		case byteFallbackDec:
			d = byteFallbackDec{raw: true}
		}
		out[k] = d
	}
	return out
}

type fuseDec struct{}

func (fuseDec) decode(toks []string) []string { return []string{strings.Join(toks, "")} }

type mapDec func(string) string

func (f mapDec) decode(toks []string) []string {
	for k, t := range toks {
		toks[k] = f(t)
	}
	return toks
}

type stripDec struct {
	r           rune
	start, stop int
}

func (d stripDec) decode(toks []string) []string {
	for k, t := range toks {
		for n := 0; n < d.start; n++ {
			r, size := utf8.DecodeRuneInString(t)
			if size == 0 || r != d.r {
				break
			}
			t = t[size:]
		}
		for n := 0; n < d.stop; n++ {
			r, size := utf8.DecodeLastRuneInString(t)
			if size == 0 || r != d.r {
				break
			}
			t = t[:len(t)-size]
		}
		toks[k] = t
	}
	return toks
}

// metaspaceDec turns the replacement character back into spaces and drops the
// space that the pre-tokenizer prepended to the first token.
type metaspaceDec struct {
	repl       rune
	stripFirst bool
}

func (d metaspaceDec) decode(toks []string) []string {
	for k, t := range toks {
		if !strings.ContainsRune(t, d.repl) {
			continue
		}
		if k == 0 && d.stripFirst {
			t = strings.TrimPrefix(t, string(d.repl))
		}
		toks[k] = strings.ReplaceAll(t, string(d.repl), " ")
	}
	return toks
}
