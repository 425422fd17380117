package tokenizer

import (
	"fmt"
	"regexp"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"
)

// matcher finds the non-overlapping matches of a Split pattern, left to right,
// as byte spans of s.
type matcher interface {
	find(s string, dst [][2]int) [][2]int
}

// The split regexes of the byte-level families. They use a lookahead (\s+(?!\S))
// that Go's regexp lacks, so they are matched by hand with wordScanner.
const (
	gpt2Pattern   = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
	llama3Pattern = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	qwen2Pattern  = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
)

// knownPatterns maps the exact regex text of a tokenizer.json Split pattern to
// its hand-written scanner.
var knownPatterns = map[string]wordScanner{
	gpt2Pattern:   {},
	llama3Pattern: {llama3: true, maxDigits: 3},
	qwen2Pattern:  {llama3: true, maxDigits: 1},
}

// newRegexMatcher returns the matcher for a Split regex: a hand scanner for the
// known byte-level patterns, Go's regexp for any other pattern it accepts, and
// an ErrUnsupported error otherwise.
func newRegexMatcher(pattern string) (matcher, error) {
	if sc, ok := knownPatterns[pattern]; ok {
		return sc, nil
	}
	re, err := compileUnicodeRegex(pattern)
	if err != nil {
		return nil, fmt.Errorf("%w: Split regex %q: %v", ErrUnsupported, pattern, err)
	}
	return regexMatcher{re}, nil
}

// Unicode meanings of \s, \d and \w, which are ASCII-only in Go's regexp but
// Unicode-aware in the engines tokenizer.json patterns are written for.
const (
	uniSpace = `\t\n\v\f\r\x{85}\p{Z}`
	uniDigit = `\p{Nd}`
	uniWord  = `\p{L}\p{M}\p{Nd}\p{Pc}`
)

// compileUnicodeRegex compiles pattern with Go's regexp after giving \s, \d
// and \w (and their negations) their Unicode meaning.
func compileUnicodeRegex(pattern string) (*regexp.Regexp, error) {
	var b strings.Builder
	inClass := false
	for i := 0; i < len(pattern); i++ {
		c := pattern[i]
		switch {
		case c == '\\' && i+1 < len(pattern):
			i++
			e := pattern[i]
			repl, neg := "", false
			switch e {
			case 's', 'S':
				repl, neg = uniSpace, e == 'S'
			case 'd', 'D':
				repl, neg = uniDigit, e == 'D'
			case 'w', 'W':
				repl, neg = uniWord, e == 'W'
			default:
				b.WriteByte(c)
				b.WriteByte(e)
				continue
			}
			switch {
			case inClass && neg:
				return nil, fmt.Errorf(`\%c inside a character class`, e)
			case inClass:
				b.WriteString(repl)
			case neg:
				b.WriteString("[^" + repl + "]")
			default:
				b.WriteString("[" + repl + "]")
			}
		case c == '[' && !inClass:
			inClass = true
			b.WriteByte(c)
			// A ']' right after '[' or '[^' is a literal.
			if i+1 < len(pattern) && pattern[i+1] == '^' {
				i++
				b.WriteByte('^')
			}
			if i+1 < len(pattern) && pattern[i+1] == ']' {
				i++
				b.WriteByte(']')
			}
		case c == ']' && inClass:
			inClass = false
			b.WriteByte(c)
		default:
			b.WriteByte(c)
		}
	}
	return regexp.Compile(b.String())
}

type regexMatcher struct{ re *regexp.Regexp }

func (m regexMatcher) find(s string, dst [][2]int) [][2]int {
	for _, loc := range m.re.FindAllStringIndex(s, -1) {
		if loc[0] == loc[1] {
			continue
		}
		dst = append(dst, [2]int{loc[0], loc[1]})
	}
	return dst
}

type literalMatcher struct{ lit string }

func (m literalMatcher) find(s string, dst [][2]int) [][2]int {
	if m.lit == "" {
		return dst
	}
	off := 0
	for {
		i := strings.Index(s[off:], m.lit)
		if i < 0 {
			return dst
		}
		dst = append(dst, [2]int{off + i, off + i + len(m.lit)})
		off += i + len(m.lit)
	}
}

// wordScanner matches the GPT-2 pattern (llama3 false) or the Llama-3 / Qwen2
// pattern (llama3 true, digits grouped by at most maxDigits) over Unicode
// categories: \s is unicode.IsSpace, \p{L} unicode.IsLetter, \p{N} unicode.IsNumber.
type wordScanner struct {
	llama3    bool
	maxDigits int
}

// Character classes of the split patterns.
const (
	clsOther  uint8 = iota // [^\s\p{L}\p{N}]
	clsLetter              // \p{L}
	clsNumber              // \p{N}
	clsSpace               // \s
)

var asciiClass [utf8.RuneSelf]uint8

func init() {
	for r := rune(0); r < utf8.RuneSelf; r++ {
		asciiClass[r] = classOfSlow(r)
	}
}

func classOfSlow(r rune) uint8 {
	switch {
	case unicode.IsSpace(r):
		return clsSpace
	case unicode.IsLetter(r):
		return clsLetter
	case unicode.IsNumber(r):
		return clsNumber
	}
	return clsOther
}

func classOf(r rune) uint8 {
	if r < utf8.RuneSelf {
		return asciiClass[r]
	}
	return classOfSlow(r)
}

// runeAt decodes the rune at byte offset i (utf8.RuneError, 0 at the end).
func runeAt(s string, i int) (rune, int) {
	if i >= len(s) {
		return utf8.RuneError, 0
	}
	if c := s[i]; c < utf8.RuneSelf {
		return rune(c), 1
	}
	return utf8.DecodeRuneInString(s[i:])
}

// spanWhile returns the end of the run of runes from i that satisfy f.
func spanWhile(s string, i int, f func(rune) bool) int {
	for i < len(s) {
		r, n := runeAt(s, i)
		if !f(r) {
			break
		}
		i += n
	}
	return i
}

// spanClass returns the end of the run of runes from i of class c.
func spanClass(s string, i int, c uint8) int {
	for i < len(s) {
		if b := s[i]; b < utf8.RuneSelf {
			if asciiClass[b] != c {
				break
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if classOfSlow(r) != c {
			break
		}
		i += n
	}
	return i
}

func (sc wordScanner) find(s string, dst [][2]int) [][2]int {
	for i := 0; i < len(s); {
		end := sc.matchAt(s, i)
		dst = append(dst, [2]int{i, end})
		i = end
	}
	return dst
}

// contraction reports the length of 's 't 're 've 'm 'll 'd at i (0 if none).
func contraction(s string, i int, fold bool) int {
	if s[i] != '\'' || i+1 >= len(s) {
		return 0
	}
	lower := func(c byte) byte {
		if fold && c >= 'A' && c <= 'Z' {
			return c + 'a' - 'A'
		}
		return c
	}
	switch lower(s[i+1]) {
	case 's', 't', 'm', 'd':
		return 2
	case 'r', 'v':
		if i+2 < len(s) && lower(s[i+2]) == 'e' {
			return 3
		}
	case 'l':
		if i+2 < len(s) && lower(s[i+2]) == 'l' {
			return 3
		}
	}
	return 0
}

// matchAt returns the end of the match that starts at i; the patterns cover
// every rune, so there always is one.
func (sc wordScanner) matchAt(s string, i int) int {
	if s[i] == '\'' {
		if n := contraction(s, i, sc.llama3); n > 0 {
			return i + n
		}
	}
	r, n := runeAt(s, i)
	c := classOf(r)
	r2, n2 := runeAt(s, i+n)
	c2 := clsOther
	if n2 > 0 {
		c2 = classOf(r2)
	}
	if sc.llama3 {
		switch {
		case c == clsLetter: // [^\r\n\p{L}\p{N}]?\p{L}+
			return spanClass(s, i+n, clsLetter)
		case c2 == clsLetter && r != '\r' && r != '\n' && c != clsNumber:
			return spanClass(s, i+n+n2, clsLetter)
		case c == clsNumber: // \p{N}{1,k}
			j := i + n
			for k := 1; (sc.maxDigits == 0 || k < sc.maxDigits) && j < len(s); k++ {
				r3, n3 := runeAt(s, j)
				if classOf(r3) != clsNumber {
					break
				}
				j += n3
			}
			return j
		}
		//  ?[^\s\p{L}\p{N}]+[\r\n]*
		start := -1
		if r == ' ' && n2 > 0 && c2 == clsOther {
			start = i + n
		} else if c == clsOther {
			start = i
		}
		if start >= 0 {
			j := spanClass(s, start, clsOther)
			for j < len(s) && (s[j] == '\r' || s[j] == '\n') {
				j++
			}
			return j
		}
		// \s*[\r\n]+
		j := spanClass(s, i, clsSpace)
		if last := strings.LastIndexAny(s[i:j], "\r\n"); last >= 0 {
			return i + last + 1
		}
		return sc.spaces(s, i, j)
	}
	//  ?\p{L}+ |  ?\p{N}+ |  ?[^\s\p{L}\p{N}]+
	if c != clsSpace {
		return spanClass(s, i+n, c)
	}
	if r == ' ' && n2 > 0 && c2 != clsSpace {
		return spanClass(s, i+n+n2, c2)
	}
	return sc.spaces(s, i, spanClass(s, i, clsSpace))
}

// spaces implements \s+(?!\S)|\s+ for the whitespace run s[i:j].
func (wordScanner) spaces(s string, i, j int) int {
	if j >= len(s) {
		return j
	}
	// Followed by a non-space: give back the last whitespace rune if the run
	// has more than one.
	_, last := utf8.DecodeLastRuneInString(s[i:j])
	if j-last > i {
		return j - last
	}
	return j
}

// splitBehavior is a Split pre-tokenizer's "behavior".
type splitBehavior int

const (
	behRemoved splitBehavior = iota
	behIsolated
	behMergedWithPrevious
	behMergedWithNext
	behContiguous
)

func parseBehavior(s string) (splitBehavior, error) {
	switch s {
	case "Removed":
		return behRemoved, nil
	case "Isolated":
		return behIsolated, nil
	case "MergedWithPrevious":
		return behMergedWithPrevious, nil
	case "MergedWithNext":
		return behMergedWithNext, nil
	case "Contiguous":
		return behContiguous, nil
	}
	return 0, fmt.Errorf("%w: Split behavior %q", ErrUnsupported, s)
}

// scratch holds the buffers one Encode call reuses.
type scratch struct {
	spans  [][2]int
	segs   []seg
	pieces [][2]int
	strs   []string
	a, b   []piece
}

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

type seg struct {
	start, end int
	match      bool
}

// splitBy cuts s at the matches of m and combines the parts per behavior,
// appending the non-empty pieces to dst.
func splitBy(s string, m matcher, beh splitBehavior, invert bool, dst []string, sc *scratch) []string {
	sc.spans = m.find(s, sc.spans[:0])
	if beh == behIsolated {
		prev := 0
		for _, sp := range sc.spans {
			if sp[0] > prev {
				dst = append(dst, s[prev:sp[0]])
			}
			dst = append(dst, s[sp[0]:sp[1]])
			prev = sp[1]
		}
		if prev < len(s) {
			dst = append(dst, s[prev:])
		}
		return dst
	}
	segs := sc.segs[:0]
	prev := 0
	for _, sp := range sc.spans {
		if sp[0] > prev {
			segs = append(segs, seg{prev, sp[0], invert})
		}
		segs = append(segs, seg{sp[0], sp[1], !invert})
		prev = sp[1]
	}
	if prev < len(s) {
		segs = append(segs, seg{prev, len(s), invert})
	}
	sc.segs = segs
	switch beh {
	case behRemoved:
		for _, g := range segs {
			if !g.match {
				dst = append(dst, s[g.start:g.end])
			}
		}
	case behMergedWithPrevious:
		// A match joins the piece before it unless that piece ended in a match.
		pieces := sc.pieces[:0]
		prevMatch := false
		for _, g := range segs {
			if g.match && !prevMatch && len(pieces) > 0 {
				pieces[len(pieces)-1][1] = g.end
			} else {
				pieces = append(pieces, [2]int{g.start, g.end})
			}
			prevMatch = g.match
		}
		for _, p := range pieces {
			dst = append(dst, s[p[0]:p[1]])
		}
		sc.pieces = pieces
	case behMergedWithNext:
		// A match joins the piece after it unless that piece is a match.
		pieces := sc.pieces[:0]
		nextMatch := false
		for k := len(segs) - 1; k >= 0; k-- {
			g := segs[k]
			if g.match && !nextMatch && len(pieces) > 0 {
				pieces[len(pieces)-1][0] = g.start
			} else {
				pieces = append(pieces, [2]int{g.start, g.end})
			}
			nextMatch = g.match
		}
		for k := len(pieces) - 1; k >= 0; k-- {
			dst = append(dst, s[pieces[k][0]:pieces[k][1]])
		}
		sc.pieces = pieces
	case behContiguous:
		start := -1
		for k, g := range segs {
			if start < 0 {
				start = g.start
			}
			if !(g.match && k+1 < len(segs) && segs[k+1].match) {
				dst = append(dst, s[start:g.end])
				start = -1
			}
		}
	}
	return dst
}
