package tokenizer

import (
	"strings"
	"testing"

	"github.com/largeforge/largeforge/internal/benchenv"
)

// benchText is about 64 KiB of mixed English prose, code, numbers and
// non-Latin text.
var benchText = strings.Repeat("Once upon a time, there was a little dog named Max. He liked to run in the park!\n"+
	"func main() { fmt.Println(\"hello, world\", 42, 3.14159) }\n"+
	"Les élèves ont réussi l'examen — 日本語のテキストも少し。 Привет, как дела? 🚀✅\n", 300)

func benchEncode(b *testing.B, tok *Tokenizer) {
	b.SetBytes(int64(len(benchText)))
	b.ResetTimer()
	for b.Loop() {
		tok.Encode(benchText, true)
	}
}

// BenchmarkEncode reports encode throughput (MB/s) per tokenizer family.
func BenchmarkEncode(b *testing.B) {
	benchenv.Log(b)
	b.Run("qwen3", func(b *testing.B) { benchEncode(b, qwen3(b)) })
	b.Run("llama2", func(b *testing.B) { benchEncode(b, llama2(b)) })
	b.Run("stories260K", func(b *testing.B) { benchEncode(b, stories(b)) })
}

func BenchmarkDecode(b *testing.B) {
	benchenv.Log(b)
	for _, tc := range []struct {
		name string
		tok  func(testing.TB) *Tokenizer
	}{{"qwen3", qwen3}, {"llama2", llama2}} {
		b.Run(tc.name, func(b *testing.B) {
			tok := tc.tok(b)
			ids := tok.Encode(benchText, false)
			b.SetBytes(int64(len(benchText)))
			b.ResetTimer()
			for b.Loop() {
				tok.Decode(ids, true)
			}
		})
	}
}

func BenchmarkStreamDecode(b *testing.B) {
	benchenv.Log(b)
	tok := qwen3(b)
	ids := tok.Encode(benchText, false)
	b.SetBytes(int64(len(benchText)))
	b.ResetTimer()
	for b.Loop() {
		d := tok.NewStreamDecoder(true)
		for _, id := range ids {
			d.Add(id)
		}
		d.Flush()
	}
}

func BenchmarkLoadQwen3(b *testing.B) {
	benchenv.Log(b)
	path := qwen3Path(b)
	for b.Loop() {
		if _, err := Load(path); err != nil {
			b.Fatal(err)
		}
	}
}
