package tokenizer

import (
	"strings"
	"unicode/utf8"
)

// StreamDecoder turns a stream of generated token ids into text incrementally.
// Add returns only text that is complete: a token that ends inside a UTF-8
// sequence (byte fallback, byte-level pieces of a character) is held back until
// the sequence is complete. The concatenation of everything Add and Flush
// return equals Decode of all the ids, leading-space stripping included
// (only after more than 64 tokens of invalid UTF-8 in a row may the
// replacement characters differ).
//
// A StreamDecoder is not safe for concurrent use; use one per stream.
type StreamDecoder struct {
	t           *Tokenizer
	skipSpecial bool
	ids         []int  // the window: context tokens, then tokens not yet emitted
	prefix      string // Decode of the window's context tokens
	prefixLen   int    // how many window tokens prefix covers
}

// maxHeldTokens bounds how many tokens Add holds back waiting for the end of
// a UTF-8 sequence.
const maxHeldTokens = 16

// NewStreamDecoder starts incremental decoding; skipSpecial as for Decode.
func (t *Tokenizer) NewStreamDecoder(skipSpecial bool) *StreamDecoder {
	return &StreamDecoder{t: t, skipSpecial: skipSpecial}
}

// NewStreamDecoderAfter starts incremental decoding of tokens that follow
// context (typically the prompt): the context is not emitted, but the first
// generated token is decoded after it, so a SentencePiece-style "▁word" keeps
// its leading space instead of being stripped as the start of a text. Only
// the last few context tokens are kept.
func (t *Tokenizer) NewStreamDecoderAfter(skipSpecial bool, context []int) *StreamDecoder {
	d := &StreamDecoder{t: t, skipSpecial: skipSpecial}
	if len(context) > maxHeldTokens {
		context = context[len(context)-maxHeldTokens:]
	}
	d.ids = append(d.ids, context...)
	d.prefix = t.Decode(d.ids, skipSpecial)
	d.prefixLen = len(d.ids)
	return d
}

// Add appends one token and returns the text it completes ("" if none yet).
func (d *StreamDecoder) Add(id int) string {
	d.ids = append(d.ids, id)
	s := d.t.Decode(d.ids, d.skipSpecial)
	if len(s) <= len(d.prefix) {
		return ""
	}
	if strings.HasSuffix(s, "\uFFFD") {
		held := len(d.ids) - d.prefixLen
		if held < maxHeldTokens {
			return ""
		}
		// A long run of invalid bytes: emit up to a cut that later tokens
		// cannot change, so the window stays small.
		if out, ok := d.cut(s); ok || held < 4*maxHeldTokens {
			return out
		}
	}
	newText := d.emitted(s)
	// Keep the tokens just emitted as the context of the next step: the
	// decoders see the same leading token both times.
	d.ids = append(d.ids[:0], d.ids[d.prefixLen:]...)
	d.prefix = d.t.Decode(d.ids, d.skipSpecial)
	d.prefixLen = len(d.ids)
	return newText
}

// cut looks for a token boundary k in the held tokens where decoding the two
// sides apart gives the same text as decoding them together: the bytes after
// k have already settled how the text before k ends. It emits the text up to
// k and keeps the rest held.
func (d *StreamDecoder) cut(s string) (string, bool) {
	for k := len(d.ids) - 1; k > d.prefixLen; k-- {
		a := d.t.Decode(d.ids[:k], d.skipSpecial)
		if len(a) <= len(d.prefix) || !strings.HasPrefix(a, d.prefix) || !strings.HasPrefix(s, a) {
			continue
		}
		if a+d.t.Decode(d.ids[k:], d.skipSpecial) != s {
			continue
		}
		out := a[len(d.prefix):]
		emitted := k - d.prefixLen
		d.ids = append(d.ids[:0], d.ids[d.prefixLen:]...)
		d.prefix = d.t.Decode(d.ids[:emitted], d.skipSpecial)
		d.prefixLen = emitted
		return out, true
	}
	return "", false
}

// emitted returns the part of s after the context text.
func (d *StreamDecoder) emitted(s string) string {
	if strings.HasPrefix(s, d.prefix) {
		return s[len(d.prefix):]
	}
	// Only possible for id sequences that do not decode locally (invalid byte
	// runs): emit what follows the common prefix, on a rune boundary.
	n := 0
	for n < len(s) && n < len(d.prefix) && s[n] == d.prefix[n] {
		n++
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[n:]
}

// Flush returns the text still held back (an incomplete UTF-8 sequence
// decodes to U+FFFD) and resets the decoder for a new stream.
func (d *StreamDecoder) Flush() string {
	var out string
	if len(d.ids) > d.prefixLen {
		s := d.t.Decode(d.ids, d.skipSpecial)
		if len(s) > len(d.prefix) {
			out = d.emitted(s)
		}
	}
	d.ids, d.prefix, d.prefixLen = d.ids[:0], "", 0
	return out
}
