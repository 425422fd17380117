package tokenizer

import (
	"bytes"
	"testing"
)

// DecodeBytes keeps the bytes of a token that holds part of a character,
// which Decode replaces with U+FFFD: byte-level tokens (ByteLevelJSON, the
// `model init` tokenizer, whose Decode is the per-id byte table) and
// byte-fallback tokens <0xXX> (stories260K's decoders).
func TestDecodeBytes(t *testing.T) {
	data, err := ByteLevelJSON(nil)
	if err != nil {
		t.Fatal(err)
	}
	bl, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	fallback := func(b string) []int {
		id, ok := stories(t).TokenID(b)
		if !ok {
			t.Fatalf("stories260K has no token %s", b)
		}
		return []int{id}
	}
	e := bl.Encode("é", false)
	if len(e) != 2 {
		t.Fatalf("é is %d byte-level tokens, want 2", len(e))
	}
	tests := []struct {
		name string
		tok  *Tokenizer
		ids  []int
		want []byte
	}{
		{"byte-level first byte", bl, e[:1], []byte{0xC3}},
		{"byte-level second byte", bl, e[1:], []byte{0xA9}},
		{"byte-level both", bl, e, []byte("é")},
		{"byte fallback lead byte", stories(t), fallback("<0xE2>"), []byte{0xE2}},
		{"byte fallback ascii", stories(t), fallback("<0x41>"), []byte("A")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.tok.DecodeBytes(tt.ids, true); !bytes.Equal(got, tt.want) {
				t.Errorf("DecodeBytes(%v) = %x, want %x", tt.ids, got, tt.want)
			}
			if want := string(appendLossy(nil, tt.want)); tt.tok.Decode(tt.ids, true) != want {
				t.Errorf("Decode(%v) = %q, want %q", tt.ids, tt.tok.Decode(tt.ids, true), want)
			}
		})
	}
}
