package tokenizer

import "unicode/utf8"

// byteLevelAlphabet lists, for the GPT-2 byte-to-unicode mapping, the byte
// values in vocabulary order: first the printable ones that map to themselves
// ('!'..'~', '¡'..'¬', '®'..'ÿ'), then the rest, which map to U+0100 onward.
var byteLevelAlphabet [256]byte

// byteToRune maps a byte to the rune that stands for it in byte-level tokens;
// runeToByte is its inverse (valid where runeIsByte is true).
var (
	byteToRune [256]rune
	byteToStr  [256]string
	runeToByte [324]int16 // -1 where the rune stands for no byte
)

// byteOfRune returns the byte a byte-level rune stands for.
func byteOfRune(r rune) (byte, bool) {
	if r < 0 || int(r) >= len(runeToByte) || runeToByte[r] < 0 {
		return 0, false
	}
	return byte(runeToByte[r]), true
}

func init() {
	n := 0
	var printable [256]bool
	for b := '!'; b <= '~'; b++ {
		printable[b] = true
	}
	for b := '¡'; b <= '¬'; b++ {
		printable[b] = true
	}
	for b := '®'; b <= 'ÿ'; b++ {
		printable[b] = true
	}
	for b := 0; b < 256; b++ {
		if printable[b] {
			byteLevelAlphabet[n] = byte(b)
			byteToRune[b] = rune(b)
			n++
		}
	}
	extra := 0
	for b := 0; b < 256; b++ {
		if !printable[b] {
			byteLevelAlphabet[n] = byte(b)
			byteToRune[b] = rune(256 + extra)
			extra++
			n++
		}
	}
	for r := range runeToByte {
		runeToByte[r] = -1
	}
	for b := 0; b < 256; b++ {
		byteToStr[b] = string(byteToRune[b])
		runeToByte[byteToRune[b]] = int16(b)
	}
}

// byteLevelString maps raw bytes to their byte-level token spelling.
func byteLevelString(s string) string {
	buf := make([]byte, 0, len(s)*2)
	for i := 0; i < len(s); i++ {
		buf = utf8.AppendRune(buf, byteToRune[s[i]])
	}
	return string(buf)
}

// byteLevelBytes maps a byte-level token back to raw bytes. ok is false when
// the token holds a rune outside the byte-level alphabet (an added token such
// as "<|im_start|>" is all ASCII and maps to itself).
func byteLevelBytes(dst []byte, tok string) ([]byte, bool) {
	start := len(dst)
	for _, r := range tok {
		b, ok := byteOfRune(r)
		if !ok {
			return dst[:start], false
		}
		dst = append(dst, b)
	}
	return dst, true
}

// appendLossy appends s to dst, replacing each maximal invalid UTF-8 subpart
// with U+FFFD the way Rust's String::from_utf8_lossy does, so that a decoded
// string is always valid UTF-8.
func appendLossy(dst []byte, s []byte) []byte {
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRune(s[i:])
		if r != utf8.RuneError || size > 1 {
			dst = append(dst, s[i:i+size]...)
			i += size
			continue
		}
		dst = append(dst, "\uFFFD"...)
		i += invalidPrefixLen(s[i:])
	}
	return dst
}

// invalidPrefixLen returns how many bytes at the start of s form the maximal
// prefix of a well-formed sequence that is cut short (at least 1).
func invalidPrefixLen(s []byte) int {
	b := s[0]
	var need int
	lo, hi := byte(0x80), byte(0xBF)
	switch {
	case b >= 0xC2 && b <= 0xDF:
		need = 1
	case b == 0xE0:
		need, lo = 2, 0xA0
	case b >= 0xE1 && b <= 0xEC, b == 0xEE, b == 0xEF:
		need = 2
	case b == 0xED:
		need, hi = 2, 0x9F
	case b == 0xF0:
		need, lo = 3, 0x90
	case b >= 0xF1 && b <= 0xF3:
		need = 3
	case b == 0xF4:
		need, hi = 3, 0x8F
	default:
		return 1
	}
	n := 1
	for k := 0; k < need && n < len(s); k++ {
		c := s[n]
		if k == 0 {
			if c < lo || c > hi {
				break
			}
		} else if c < 0x80 || c > 0xBF {
			break
		}
		n++
	}
	return n
}
