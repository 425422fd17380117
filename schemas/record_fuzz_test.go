package schemas

import (
	"fmt"
	"strings"
	"testing"
)

// recordSeeds are tricky documents for the differential fuzz test: each is
// checked against all three formats.
var recordSeeds = []string{
	`{"instruction":"i","input":"x","output":"o"}`,
	`{"instruction":"i","output":"o"}`,
	`{"instruction":"","output":"o"}`,
	`{"instruction":"i","input":null,"output":"o"}`,
	`{"instruction":"i","input":"","output":"o","extra":[1,{"a":null}]}`,
	`{"instruction":["i"],"output":"o"}`,
	`{"instruction":"i","output":"o","instruction":5}`,
	`{"instruction":5,"output":"o","instruction":"i"}`,
	`{"INSTRUCTION":"i","output":"o"}`,
	`{"instr\u0075ction":"i","output":"o"}`,
	`{"instruction":"\ud800","output":"\udc00"}`,
	`{"instruction":"\ud800\u0041","output":"\ud83d\ude00"}`,
	`{"instruction":"\ud83d","output":"\\"}`,
	`{"instruction":"\u0000","output":"\/"}`,
	"{\"instruction\":\"\xed\xa0\x80\",\"output\":\"o\"}",
	"{\"instruction\":\"\xff\",\"output\":\"o\"}",
	"{\"instruction\":\"i\",\"output\":\"o\",\"\xc3\":1}",
	"\xef\xbb\xbf{\"instruction\":\"i\",\"output\":\"o\"}",
	"{\"instruction\":\"a\x01\",\"output\":\"o\"}",
	" \t\r\n{\"instruction\":\"i\",\"output\":\"o\"}\n ",
	`{"instruction":"i","output":"o"}x`,
	`{"instruction":"i","output":"o"`,
	`{"instruction":"i","output":"o",}`,
	`{"instruction":"i" "output":"o"}`,
	`{"instruction":"i","output":"o","n":-0.5e+10,"m":1E2,"k":-0}`,
	`{"instruction":"i","output":"o","n":01}`,
	`{"instruction":"i","output":"o","n":1.}`,
	`{"instruction":"i","output":"o","n":-}`,
	`{"instruction":"i","output":"o","n":tru}`,
	`{"instruction":"i","output":"o","n":.5}`,
	`{}`,
	`[]`,
	`null`,
	`"instruction"`,
	`1`,
	``,
	`{"prompt":"p","chosen":"c","rejected":"r"}`,
	`{"prompt":"p","chosen":"","rejected":"r"}`,
	`{"prompt":"p","chosen":"c"}`,
	`{"prompt":"p","chosen":"c","rejected":false}`,
	`{"prompt":"p","chosen":"c","rejected":"r","prompt":{}}`,
	`{"conversations":[{"from":"human","value":"h"},{"from":"gpt","value":"g"}]}`,
	`{"conversations":[{"from":"human","value":"h"}]}`,
	`{"conversations":[]}`,
	`{"conversations":null}`,
	`{"conversations":"[]"}`,
	`{"conversations":[{"from":"human","value":"h"},{"from":"bot","value":"g"}]}`,
	`{"conversations":[{"from":"human","value":"h"},{"from":"gpt","value":""}]}`,
	`{"conversations":[{"from":"human","value":"h"},{"from":"gpt"}]}`,
	`{"conversations":[{"from":"human","value":"h"},{"value":"g"}]}`,
	`{"conversations":[{"from":"human","value":"h"},[]]}`,
	`{"conversations":[{"from":"human","value":"h"},null,{"from":"gpt","value":"g"}]}`,
	`{"conversations":[{"from":"human","value":"h","from":"gpt"},{"from":"system","value":"s","value":1}]}`,
	`{"conversations":[{"from":"Human","value":"h"},{"from":"gpt","value":"g"}]}`,
	`{"conversations":[{"from":"hum\u0061n","value":"h"},{"from":"gpt","value":"g"}]}`,
	`{"conversations":[{"from":"human","value":"h"},{"from":"gpt","value":"g"},]}`,
	`{"conversations":[1,2],"conversations":[{"from":"human","value":"h"},{"from":"gpt","value":"g"}]}`,
	`{"conversations":[{"from":"human","value":"h"},{"from":"gpt","value":"g"}],"conversations":[]}`,
	// Long strings exercise the 8-bytes-at-a-time scan.
	`{"instruction":"abcdefghijklmnop\"q\\rs\u00e9tuvwxyz0123456789ABCDEFGH","output":"0123456789abcdefghijklmnopqrstuvwxyz"}`,
	"{\"instruction\":\"abcdefghijklmno\x7f\xc3\xa9pqrstuvwxyz0123456789\",\"output\":\"0123456789abcdef\x01ghijklmnop\"}",
	"{\"instruction\":\"abcdefgh\xe2\x82\",\"output\":\"0123456789abcdefghijklmnop\xf0\x9f\x98\x80qrstuv\"}",
	`{"prompt":"0123456789abcdefghijklmnopqrstuvwxyz","chosen":"0123456789abcdefghijklmnopqrstuvwxyz\ud83d\ude00","rejected":"0123456789abcdef`,
}

func FuzzDecodeRecord(f *testing.F) {
	for _, s := range recordSeeds {
		f.Add([]byte(s))
	}
	// Long strings and deep nesting are in TestDecodeRecord's table: as
	// seeds they would slow the mutator down.
	f.Add([]byte(`{"instruction":"i","output":"` + strings.Repeat("é", 40) + `"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, format := range Formats() {
			checkAgainstSchema(t, format, data)
		}
		if format, ok := DetectFormat(data); ok && !format.Valid() {
			t.Fatalf("DetectFormat returned invalid format %q", format)
		}
	})
}

// alpacaRow is a realistic ~600 byte alpaca JSONL row.
func alpacaRow(i int) []byte {
	return []byte(fmt.Sprintf(`{"instruction":"Summarize the following text in one sentence, keeping the key facts (item %d).",`+
		`"input":"Large language models are neural networks trained on vast amounts of text. They learn statistical patterns of language and can be adapted to many downstream tasks such as translation, question answering and summarization, often with only a few examples. Fine-tuning with instruction data improves how well they follow requests.",`+
		`"output":"LLMs are neural networks trained on large text corpora that can be fine-tuned with instruction data to perform many language tasks. \u00e9\u00e8 caf\u00e9 ok"}`, i))
}

func BenchmarkDecodeRecordAlpaca(b *testing.B) {
	rows := make([][]byte, 64)
	size := 0
	for i := range rows {
		rows[i] = alpacaRow(i)
		size += len(rows[i])
	}
	b.SetBytes(int64(size / len(rows)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := DecodeRecord(FormatAlpaca, rows[i%len(rows)]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}

func BenchmarkDecodeRecordAlpacaID(b *testing.B) {
	rows := make([][]byte, 64)
	for i := range rows {
		rows[i] = alpacaRow(i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r, err := DecodeRecord(FormatAlpaca, rows[i%len(rows)])
		if err != nil {
			b.Fatal(err)
		}
		_ = r.ID()
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}

func BenchmarkValidateWithSchemaAlpaca(b *testing.B) {
	rows := make([][]byte, 64)
	for i := range rows {
		rows[i] = alpacaRow(i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := ValidateWithSchema(FormatAlpaca, rows[i%len(rows)]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}

func BenchmarkDecodeRecordShareGPT(b *testing.B) {
	row := []byte(`{"conversations":[{"from":"system","value":"You are a helpful assistant."},` +
		`{"from":"human","value":"What is Python?"},{"from":"gpt","value":"Python is a high-level programming language known for readability."},` +
		`{"from":"human","value":"What are its main uses?"},{"from":"gpt","value":"Python is commonly used for web development, data science, automation and scripting."}]}`)
	b.SetBytes(int64(len(row)))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := DecodeRecord(FormatShareGPT, row); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}
