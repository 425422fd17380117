package schemas

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// maxNestingDepth is encoding/json's limit on nested arrays and objects; the
// scanner enforces the same limit so that it accepts exactly what
// encoding/json (and so the JSON Schema library) accepts.
const maxNestingDepth = 10000

// jsonKind is the JSON type of a value, as JSON Schema names it.
type jsonKind uint8

const (
	kindAbsent jsonKind = iota
	kindNull
	kindBool
	kindNumber
	kindString
	kindArray
	kindObject
)

func (k jsonKind) String() string {
	switch k {
	case kindNull:
		return "null"
	case kindBool:
		return "boolean"
	case kindNumber:
		return "number"
	case kindString:
		return "string"
	case kindArray:
		return "array"
	case kindObject:
		return "object"
	}
	return "absent"
}

// syntaxError is a JSON syntax problem found by the scanner.
type syntaxError struct {
	msg string
	off int
}

func (e *syntaxError) Error() string { return fmt.Sprintf("%s at offset %d", e.msg, e.off) }

// errBadUTF8 is returned by the scanner for invalid UTF-8 inside a string.
var errBadUTF8 = errors.New("invalid UTF-8 in string")

// errLoneSurrogate is wrapped by the scanner's error for a \uD800-\uDFFF
// escape that is not half of a surrogate pair: it stands for no Unicode
// character, so it is rejected rather than replaced with U+FFFD.
var errLoneSurrogate = errors.New("lone UTF-16 surrogate escape")

// scanner is a small validating JSON scanner over one document. It checks
// the full RFC 8259 grammar (as encoding/json does) and rejects invalid UTF-8
// inside strings.
type scanner struct {
	data  []byte
	pos   int
	depth int
}

func (s *scanner) syntax(msg string) error { return &syntaxError{msg: msg, off: s.pos} }

func (s *scanner) skipWS() {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\r', '\n':
			s.pos++
		default:
			return
		}
	}
}

func (s *scanner) eof() error { return s.syntax("unexpected end of JSON input") }

func (s *scanner) unexpected() error {
	if s.pos >= len(s.data) {
		return s.eof()
	}
	return s.syntax(fmt.Sprintf("invalid character %q", s.data[s.pos]))
}

// push enters an array or object (the opening byte already consumed).
func (s *scanner) push() error {
	s.depth++
	if s.depth > maxNestingDepth {
		return s.syntax("exceeded max depth")
	}
	return nil
}

// peekKind reports the kind of the value starting at pos (after whitespace).
func (s *scanner) peekKind() jsonKind {
	s.skipWS()
	if s.pos >= len(s.data) {
		return kindAbsent
	}
	switch c := s.data[s.pos]; {
	case c == '"':
		return kindString
	case c == '{':
		return kindObject
	case c == '[':
		return kindArray
	case c == 't' || c == 'f':
		return kindBool
	case c == 'n':
		return kindNull
	case c == '-' || (c >= '0' && c <= '9'):
		return kindNumber
	}
	return kindAbsent
}

// SWAR constants: a byte repeated in every lane of a uint64.
const (
	lanes1 = 0x0101010101010101
	lanes8 = 0x8080808080808080
)

// plainWord reports whether none of the 8 bytes in x is a quote, a backslash
// or a control character (the bytes a string scan must stop at).
func plainWord(x uint64) bool {
	q := x ^ (lanes1 * '"')
	bs := x ^ (lanes1 * '\\')
	return ((q-lanes1)&^q|(bs-lanes1)&^bs|(x-lanes1*0x20)&^x)&lanes8 == 0
}

// scanString scans a string whose opening quote is at pos. It returns the raw
// bytes between the quotes and whether they contain escapes.
func (s *scanner) scanString() (raw []byte, escaped bool, err error) {
	s.pos++ // opening quote
	start := s.pos
	data := s.data
	var high uint64 // OR of all bytes skipped 8 at a time
	nonASCII := false
	i := s.pos
	for {
		for i+8 <= len(data) {
			x := binary.LittleEndian.Uint64(data[i:])
			if !plainWord(x) {
				break
			}
			high |= x
			i += 8
		}
		if i >= len(data) {
			s.pos = len(data)
			return nil, false, s.eof()
		}
		c := data[i]
		switch {
		case c == '"':
			raw = data[start:i]
			s.pos = i + 1
			if (nonASCII || high&lanes8 != 0) && !utf8.Valid(raw) {
				return nil, false, errBadUTF8
			}
			return raw, escaped, nil
		case c == '\\':
			escaped = true
			i++
			if i >= len(data) {
				s.pos = i
				return nil, false, s.eof()
			}
			switch data[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				for j := 0; j < 4; j++ {
					i++
					if i >= len(data) {
						s.pos = i
						return nil, false, s.eof()
					}
					if !isHex(data[i]) {
						s.pos = i
						return nil, false, s.syntax("invalid character in \\u hexadecimal character escape")
					}
				}
				// A UTF-16 surrogate escape must be a high one followed at
				// once by a low one: alone it stands for no character.
				if r := getu4(data[i-5:]); utf16.IsSurrogate(r) {
					if r >= 0xDC00 || utf16.DecodeRune(r, getu4(data[i+1:])) == unicode.ReplacementChar {
						s.pos = i - 5
						return nil, false, fmt.Errorf("%w %s", errLoneSurrogate, data[i-5:i+1])
					}
					i += 6
				}
			default:
				s.pos = i
				return nil, false, s.syntax("invalid character in string escape code")
			}
			i++
		case c < 0x20:
			s.pos = i
			return nil, false, s.syntax("invalid control character in string literal")
		default:
			if c >= 0x80 {
				nonASCII = true
			}
			i++
		}
	}
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

// unquote turns raw string bytes (already checked by scanString, so every
// surrogate escape is half of a pair) into the string encoding/json would
// decode.
func unquote(raw []byte, escaped bool) string {
	if !escaped {
		return string(raw)
	}
	var b strings.Builder
	b.Grow(len(raw))
	for r := 0; r < len(raw); {
		c := raw[r]
		if c != '\\' {
			start := r
			for r < len(raw) && raw[r] != '\\' {
				r++
			}
			b.Write(raw[start:r])
			continue
		}
		r++
		switch e := raw[r]; e {
		case 'b':
			b.WriteByte('\b')
		case 'f':
			b.WriteByte('\f')
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 't':
			b.WriteByte('\t')
		case 'u':
			rr := getu4(raw[r-1:])
			r += 5
			if utf16.IsSurrogate(rr) {
				rr = utf16.DecodeRune(rr, getu4(raw[r:]))
				r += 6
			}
			b.WriteRune(rr)
			continue
		default: // '"', '\\', '/'
			b.WriteByte(e)
		}
		r++
	}
	return b.String()
}

// getu4 decodes \uXXXX at the start of s, or returns -1.
func getu4(s []byte) rune {
	if len(s) < 6 || s[0] != '\\' || s[1] != 'u' {
		return -1
	}
	var r rune
	for _, c := range s[2:6] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return -1
		}
		r = r*16 + rune(c)
	}
	return r
}

// readString scans a string at pos and decodes it.
func (s *scanner) readString() (string, error) {
	raw, esc, err := s.scanString()
	if err != nil {
		return "", err
	}
	if !esc {
		// Speakers repeat on every turn: share their strings.
		switch string(raw) {
		case SpeakerHuman:
			return SpeakerHuman, nil
		case SpeakerGPT:
			return SpeakerGPT, nil
		case SpeakerSystem:
			return SpeakerSystem, nil
		}
	}
	return unquote(raw, esc), nil
}

// skipValue scans and discards one JSON value starting at pos (after
// whitespace).
func (s *scanner) skipValue() error {
	s.skipWS()
	if s.pos >= len(s.data) {
		return s.eof()
	}
	switch c := s.data[s.pos]; {
	case c == '"':
		_, _, err := s.scanString()
		return err
	case c == '{':
		s.pos++
		if err := s.push(); err != nil {
			return err
		}
		for first := true; ; first = false {
			_, more, err := s.nextMember(first)
			if err != nil {
				return err
			}
			if !more {
				return nil
			}
			if err := s.skipValue(); err != nil {
				return err
			}
		}
	case c == '[':
		s.pos++
		if err := s.push(); err != nil {
			return err
		}
		for first := true; ; first = false {
			more, err := s.nextElement(first)
			if err != nil {
				return err
			}
			if !more {
				return nil
			}
			if err := s.skipValue(); err != nil {
				return err
			}
		}
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	case c == '-' || (c >= '0' && c <= '9'):
		return s.number()
	}
	return s.unexpected()
}

func (s *scanner) literal(lit string) error {
	for i := 0; i < len(lit); i++ {
		if s.pos >= len(s.data) {
			return s.eof()
		}
		if s.data[s.pos] != lit[i] {
			return s.unexpected()
		}
		s.pos++
	}
	return nil
}

func (s *scanner) digits() int {
	n := 0
	for s.pos < len(s.data) && s.data[s.pos] >= '0' && s.data[s.pos] <= '9' {
		s.pos++
		n++
	}
	return n
}

// number scans -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (s *scanner) number() error {
	if s.data[s.pos] == '-' {
		s.pos++
	}
	if s.pos >= len(s.data) {
		return s.eof()
	}
	switch c := s.data[s.pos]; {
	case c == '0':
		s.pos++
	case c >= '1' && c <= '9':
		s.digits()
	default:
		return s.unexpected()
	}
	if s.pos < len(s.data) && s.data[s.pos] == '.' {
		s.pos++
		if s.digits() == 0 {
			return s.unexpected()
		}
	}
	if s.pos < len(s.data) && (s.data[s.pos] == 'e' || s.data[s.pos] == 'E') {
		s.pos++
		if s.pos < len(s.data) && (s.data[s.pos] == '+' || s.data[s.pos] == '-') {
			s.pos++
		}
		if s.digits() == 0 {
			return s.unexpected()
		}
	}
	return nil
}

// nextMember advances to the next member of an object whose '{' has been
// consumed (and pushed). It returns the member's raw key (valid until the next
// call; decoded if it had escapes) and true, positioned at the value; or false
// once the closing '}' has been consumed.
func (s *scanner) nextMember(first bool) ([]byte, bool, error) {
	s.skipWS()
	if s.pos >= len(s.data) {
		return nil, false, s.eof()
	}
	c := s.data[s.pos]
	if c == '}' && first {
		s.pos++
		s.depth--
		return nil, false, nil
	}
	if !first {
		switch c {
		case '}':
			s.pos++
			s.depth--
			return nil, false, nil
		case ',':
			s.pos++
			s.skipWS()
			if s.pos >= len(s.data) {
				return nil, false, s.eof()
			}
		default:
			return nil, false, s.unexpected()
		}
	}
	if s.data[s.pos] != '"' {
		return nil, false, s.unexpected()
	}
	raw, esc, err := s.scanString()
	if err != nil {
		return nil, false, err
	}
	if esc {
		raw = []byte(unquote(raw, true))
	}
	s.skipWS()
	if s.pos >= len(s.data) {
		return nil, false, s.eof()
	}
	if s.data[s.pos] != ':' {
		return nil, false, s.unexpected()
	}
	s.pos++
	return raw, true, nil
}

// nextElement advances to the next element of an array whose '[' has been
// consumed (and pushed): true, positioned at the element, or false once the
// closing ']' has been consumed.
func (s *scanner) nextElement(first bool) (bool, error) {
	s.skipWS()
	if s.pos >= len(s.data) {
		return false, s.eof()
	}
	c := s.data[s.pos]
	if c == ']' { // "[1,]" fails later: after ',' an element must follow
		s.pos++
		s.depth--
		return false, nil
	}
	if !first {
		if c != ',' {
			return false, s.unexpected()
		}
		s.pos++
	}
	return true, nil
}

// end checks that only whitespace follows the top-level value.
func (s *scanner) end() error {
	s.skipWS()
	if s.pos != len(s.data) {
		return s.syntax("invalid character after top-level value")
	}
	return nil
}

// scanObjectKeys walks the top-level object at pos and calls fn with each
// decoded key (used by DetectFormat).
func (s *scanner) scanObjectKeys(fn func(key string)) error {
	s.pos++
	if err := s.push(); err != nil {
		return err
	}
	for first := true; ; first = false {
		key, more, err := s.nextMember(first)
		if err != nil {
			return err
		}
		if !more {
			return nil
		}
		fn(string(key))
		if err := s.skipValue(); err != nil {
			return err
		}
	}
}

func validUTF8(b []byte) bool { return utf8.Valid(b) }
