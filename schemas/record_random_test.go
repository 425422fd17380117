package schemas

import (
	"bytes"
	"flag"
	"math/rand/v2"
	"testing"
)

// docGen generates random JSON-like documents biased towards the record
// schemas' edge cases, for the differential test below.
type docGen struct{ rng *rand.Rand }

var (
	genKeys    = []string{"instruction", "input", "output", "prompt", "chosen", "rejected", "conversations", "from", "value", "x", "Output", `instr\u0075ction`}
	genStrings = []string{"", "a", "human", "gpt", "system", "bot", "é", "😀", `\u00e9`, `\ud800`, `\ud83d\ude00`, `\n`, `\"`, `\\`, "\xff", "\xc3", "\x01", "0123456789abcdefghij"}
)

func (g docGen) str(b *bytes.Buffer) {
	b.WriteByte('"')
	for n := g.rng.IntN(4); n > 0; n-- {
		b.WriteString(genStrings[g.rng.IntN(len(genStrings))])
	}
	b.WriteByte('"')
}

func (g docGen) value(b *bytes.Buffer, depth int) {
	switch k := g.rng.IntN(10); {
	case k < 4 || depth > 4:
		g.str(b)
	case k == 4:
		b.WriteString([]string{"null", "true", "0", "-1.5e3", "12"}[g.rng.IntN(5)])
	case k < 7:
		b.WriteByte('[')
		for i, n := 0, g.rng.IntN(4); i < n; i++ {
			if i > 0 {
				b.WriteByte(',')
			}
			g.value(b, depth+1)
		}
		b.WriteByte(']')
	default:
		g.object(b, depth+1)
	}
}

func (g docGen) object(b *bytes.Buffer, depth int) {
	b.WriteByte('{')
	for i, n := 0, g.rng.IntN(5); i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('"')
		b.WriteString(genKeys[g.rng.IntN(len(genKeys))])
		b.WriteString(`":`)
		g.value(b, depth)
	}
	b.WriteByte('}')
}

// member writes `"key":` then a value that is usually a string.
func (g docGen) member(b *bytes.Buffer, key string) {
	b.WriteString(`"` + key + `":`)
	if g.rng.IntN(8) == 0 {
		g.value(b, 3)
		return
	}
	g.str(b)
}

// record writes a document shaped like one of the three record kinds, with
// random contents, random omissions and extra keys.
func (g docGen) record(b *bytes.Buffer) {
	var keys []string
	switch g.rng.IntN(3) {
	case 0:
		keys = []string{"instruction", "input", "output"}
	case 1:
		keys = []string{"prompt", "chosen", "rejected"}
	default:
		b.WriteString(`{"conversations":[`)
		for i, n := 0, g.rng.IntN(5); i < n; i++ {
			if i > 0 {
				b.WriteByte(',')
			}
			if g.rng.IntN(10) == 0 {
				g.value(b, 3)
				continue
			}
			b.WriteByte('{')
			from := []string{"human", "gpt", "system", "bot", "Human"}[g.rng.IntN(5)]
			if g.rng.IntN(10) != 0 {
				b.WriteString(`"from":"` + from + `",`)
			}
			g.member(b, "value")
			b.WriteByte('}')
		}
		b.WriteString(`]}`)
		return
	}
	b.WriteByte('{')
	first := true
	for _, k := range keys {
		if g.rng.IntN(8) == 0 {
			continue
		}
		if !first {
			b.WriteByte(',')
		}
		first = false
		g.member(b, k)
	}
	if g.rng.IntN(3) == 0 {
		if !first {
			b.WriteByte(',')
		}
		g.member(b, genKeys[g.rng.IntN(len(genKeys))])
	}
	b.WriteByte('}')
}

// doc returns a document, sometimes corrupted by one byte edit.
func (g docGen) doc() []byte {
	var b bytes.Buffer
	if g.rng.IntN(2) == 0 {
		g.record(&b)
	} else {
		g.object(&b, 0)
	}
	d := b.Bytes()
	if len(d) > 0 && g.rng.IntN(4) == 0 {
		i := g.rng.IntN(len(d))
		switch g.rng.IntN(3) {
		case 0:
			d = d[:i]
		case 1:
			const edits = "{}[],:\" \\a0\xff"
			d[i] = edits[g.rng.IntN(len(edits))]
		default:
			d = append(d[:i:i], d[i+1:]...)
		}
	}
	return d
}

var diffRuns = flag.Int("diffruns", 20000, "documents TestDecodeRecordRandomDifferential generates")
var diffSeed = flag.Uint64("diffseed", 7, "seed of TestDecodeRecordRandomDifferential")

// TestDecodeRecordRandomDifferential runs the fuzz test's check on generated
// documents, so that plain `go test` covers far more than the seed corpus.
func TestDecodeRecordRandomDifferential(t *testing.T) {
	n := *diffRuns
	if testing.Short() {
		n = 2000
	}
	g := docGen{rng: rand.New(rand.NewPCG(*diffSeed, 11))}
	accepted := map[Format]int{}
	for i := 0; i < n; i++ {
		d := g.doc()
		for _, f := range Formats() {
			checkAgainstSchema(t, f, d)
			if _, err := DecodeRecord(f, d); err == nil {
				accepted[f]++
			}
		}
	}
	t.Logf("accepted of %d: %v", n, accepted)
}
