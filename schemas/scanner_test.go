package schemas

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

func plainByte(c byte) bool { return c >= 0x20 && c != '"' && c != '\\' }

func TestPlainWord(t *testing.T) {
	check := func(w [8]byte) {
		t.Helper()
		want := true
		for _, c := range w {
			want = want && plainByte(c)
		}
		if got := plainWord(binary.LittleEndian.Uint64(w[:])); got != want {
			t.Fatalf("plainWord(%q) = %v, want %v", w, got, want)
		}
	}
	for _, fill := range []byte{'a', 0x00, 0x1f, 0x20, 0x21, 0x22, 0x5c, 0x7f, 0x80, 0xff} {
		for pos := 0; pos < 8; pos++ {
			for c := 0; c < 256; c++ {
				var w [8]byte
				for i := range w {
					w[i] = fill
				}
				w[pos] = byte(c)
				check(w)
			}
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte{0x00, 0x01, 0x1f, 0x20, 0x21, 0x22, 0x23, 0x5b, 0x5c, 0x5d, 0x7f, 0x80, 0xa2, 0xdc, 0xff, 'a'}
	for n := 0; n < 200000; n++ {
		var w [8]byte
		for i := range w {
			w[i] = alphabet[rng.IntN(len(alphabet))]
		}
		check(w)
	}
}
