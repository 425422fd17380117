package schemas

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// schemaAccepts is the reference: the JSON Schema library's verdict on data
// after encoding/json's decoding, plus the Unicode rules DecodeRecord adds
// (valid UTF-8, no lone UTF-16 surrogate escape).
func schemaAccepts(t testing.TB, f Format, data []byte) (bool, any) {
	t.Helper()
	if !utf8.Valid(data) || !json.Valid(data) || hasLoneSurrogate(data) {
		return false, nil
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return false, nil
	}
	return Schema(f).Validate(doc) == nil, doc
}

// hasLoneSurrogate reports whether a string of the valid JSON document data
// holds a \uD800-\uDFFF escape that is not a high surrogate followed by a low one.
func hasLoneSurrogate(data []byte) bool {
	hex4 := func(i int) int64 {
		if i+6 > len(data) || data[i] != '\\' || data[i+1] != 'u' {
			return -1
		}
		v, err := strconv.ParseUint(string(data[i+2:i+6]), 16, 16)
		if err != nil {
			return -1
		}
		return int64(v)
	}
	inString := false
	for i := 0; i < len(data); i++ {
		switch c := data[i]; {
		case c == '"':
			inString = !inString
		case c == '\\' && inString:
			v := hex4(i)
			switch {
			case v >= 0xD800 && v <= 0xDBFF:
				if lo := hex4(i + 6); lo < 0xDC00 || lo > 0xDFFF {
					return true
				}
				i += 11
			case v >= 0xDC00 && v <= 0xDFFF:
				return true
			default:
				i++ // skip the escaped byte (a quote, a backslash, or the u)
			}
		}
	}
	return false
}

// recordFromDoc builds the Record that a decoded, valid document stands for.
func recordFromDoc(t testing.TB, f Format, doc any) Record {
	t.Helper()
	m := doc.(map[string]any)
	str := func(m map[string]any, k string) string {
		s, _ := m[k].(string)
		return s
	}
	r := Record{Format: f}
	switch f {
	case FormatAlpaca:
		r.Alpaca = Alpaca{Instruction: str(m, "instruction"), Input: str(m, "input"), Output: str(m, "output")}
	case FormatDPO:
		r.DPO = DPO{Prompt: str(m, "prompt"), Chosen: str(m, "chosen"), Rejected: str(m, "rejected")}
	case FormatShareGPT:
		for _, it := range m["conversations"].([]any) {
			tm := it.(map[string]any)
			r.ShareGPT.Conversations = append(r.ShareGPT.Conversations, Turn{From: str(tm, "from"), Value: str(tm, "value")})
		}
	}
	return r
}

// checkAgainstSchema asserts that DecodeRecord and the JSON Schema library
// agree on data, and that an accepted record holds the decoded values.
func checkAgainstSchema(t testing.TB, f Format, data []byte) {
	t.Helper()
	want, doc := schemaAccepts(t, f, data)
	rec, err := DecodeRecord(f, data)
	if (err == nil) != want {
		t.Fatalf("%s %q: DecodeRecord err=%v, JSON Schema accepts=%v", f, data, err, want)
	}
	if err != nil {
		var ve *ValidationError
		if !errors.As(err, &ve) || !errors.Is(err, ErrInvalidRecord) {
			t.Fatalf("%s %q: error %v (%T) is not a *ValidationError matching ErrInvalidRecord", f, data, err, err)
		}
		if ve.Rule == "" || ve.Message == "" || !strings.Contains(ve.Message, ve.Rule) {
			t.Fatalf("%s %q: incomplete ValidationError %+v", f, data, ve)
		}
		return
	}
	ref := recordFromDoc(t, f, doc)
	if got, want := rec.CanonicalJSON(), ref.CanonicalJSON(); !bytes.Equal(got, want) {
		t.Fatalf("%s %q: decoded %s, want %s", f, data, got, want)
	}
	// The canonical form is itself a valid record that decodes to the same.
	again, err := DecodeRecord(f, rec.CanonicalJSON())
	if err != nil || again.ID() != rec.ID() {
		t.Fatalf("%s %q: canonical form %s does not round-trip: %v", f, data, rec.CanonicalJSON(), err)
	}
}

func TestDecodeRecord(t *testing.T) {
	long := func(n int, s string) string { return strings.Repeat(s, n) }
	tests := []struct {
		name      string
		format    Format
		in        string
		wantErr   bool
		wantField string
		wantRule  string
		want      Record
	}{
		{name: "alpaca full", format: FormatAlpaca, in: `{"instruction":"Summarize","input":"text","output":"sum"}`,
			want: Record{Format: FormatAlpaca, Alpaca: Alpaca{"Summarize", "text", "sum"}}},
		{name: "alpaca no input", format: FormatAlpaca, in: ` {"output":"o","instruction":"i"} `,
			want: Record{Format: FormatAlpaca, Alpaca: Alpaca{Instruction: "i", Output: "o"}}},
		{name: "alpaca extra keys allowed", format: FormatAlpaca, in: `{"instruction":"i","output":"o","meta":{"a":[1,2.5e3,true,null]}}`,
			want: Record{Format: FormatAlpaca, Alpaca: Alpaca{Instruction: "i", Output: "o"}}},
		{name: "alpaca escapes", format: FormatAlpaca, in: `{"instruction":"a\"b\\c\n\u00e9\ud83d\ude00","output":"\/"}`,
			want: Record{Format: FormatAlpaca, Alpaca: Alpaca{Instruction: "a\"b\\c\né😀", Output: "/"}}},
		{name: "alpaca escaped key", format: FormatAlpaca, in: `{"instr\u0075ction":"i","output":"o"}`,
			want: Record{Format: FormatAlpaca, Alpaca: Alpaca{Instruction: "i", Output: "o"}}},
		{name: "alpaca duplicate key last wins", format: FormatAlpaca, in: `{"instruction":null,"instruction":"i","output":"o"}`,
			want: Record{Format: FormatAlpaca, Alpaca: Alpaca{Instruction: "i", Output: "o"}}},
		{name: "alpaca duplicate key last loses", format: FormatAlpaca, in: `{"instruction":"i","instruction":"","output":"o"}`,
			wantErr: true, wantField: "instruction", wantRule: "minLength"},
		{name: "alpaca max lengths in code points", format: FormatAlpaca,
			in:   `{"instruction":"` + long(10000, "é") + `","output":"` + long(50000, "😀") + `"}`,
			want: Record{Format: FormatAlpaca, Alpaca: Alpaca{Instruction: long(10000, "é"), Output: long(50000, "😀")}}},
		{name: "alpaca output too long", format: FormatAlpaca, in: `{"instruction":"i","output":"` + long(50001, "x") + `"}`,
			wantErr: true, wantField: "output", wantRule: "maxLength"},
		{name: "alpaca input too long", format: FormatAlpaca, in: `{"instruction":"i","input":"` + long(10001, "é") + `","output":"o"}`,
			wantErr: true, wantField: "input", wantRule: "maxLength"},
		{name: "alpaca empty instruction", format: FormatAlpaca, in: `{"instruction":"","output":"o"}`,
			wantErr: true, wantField: "instruction", wantRule: "minLength"},
		{name: "alpaca empty input ok", format: FormatAlpaca, in: `{"instruction":"i","input":"","output":"o"}`,
			want: Record{Format: FormatAlpaca, Alpaca: Alpaca{Instruction: "i", Output: "o"}}},
		{name: "alpaca null input", format: FormatAlpaca, in: `{"instruction":"i","input":null,"output":"o"}`,
			wantErr: true, wantField: "input", wantRule: "type"},
		{name: "alpaca number output", format: FormatAlpaca, in: `{"instruction":"i","output":42}`,
			wantErr: true, wantField: "output", wantRule: "type"},
		{name: "alpaca missing output", format: FormatAlpaca, in: `{"instruction":"i"}`,
			wantErr: true, wantField: "output", wantRule: "required"},
		{name: "alpaca case-sensitive keys", format: FormatAlpaca, in: `{"Instruction":"i","output":"o"}`,
			wantErr: true, wantField: "instruction", wantRule: "required"},
		{name: "alpaca invalid utf8", format: FormatAlpaca, in: "{\"instruction\":\"i\xff\",\"output\":\"o\"}",
			wantErr: true, wantField: "instruction", wantRule: "utf8"},
		{name: "alpaca invalid utf8 in other key", format: FormatAlpaca, in: "{\"instruction\":\"i\",\"output\":\"o\",\"x\":[\"\xc3\"]}",
			wantErr: true, wantRule: "utf8"},
		{name: "alpaca lone high surrogate", format: FormatAlpaca, in: `{"instruction":"a\ud800","output":"o"}`,
			wantErr: true, wantField: "instruction", wantRule: "utf8"},
		{name: "alpaca lone low surrogate", format: FormatAlpaca, in: `{"instruction":"i","output":"\udc00b"}`,
			wantErr: true, wantField: "output", wantRule: "utf8"},
		{name: "alpaca high surrogate then a letter", format: FormatAlpaca, in: `{"instruction":"\ud800\u0041","output":"o"}`,
			wantErr: true, wantField: "instruction", wantRule: "utf8"},
		{name: "alpaca reversed pair", format: FormatAlpaca, in: `{"instruction":"\ude00\ud83d","output":"o"}`,
			wantErr: true, wantField: "instruction", wantRule: "utf8"},
		{name: "alpaca lone surrogate in other key", format: FormatAlpaca, in: `{"instruction":"i","output":"o","x":"\ud83d"}`,
			wantErr: true, wantRule: "utf8"},
		{name: "sharegpt lone surrogate", format: FormatShareGPT, in: `{"conversations":[{"from":"human","value":"h"},{"from":"gpt","value":"\udfff"}]}`,
			wantErr: true, wantField: "conversations[1].value", wantRule: "utf8"},
		{name: "dpo surrogate pair ok", format: FormatDPO, in: `{"prompt":"\ud83d\ude00","chosen":"c\uD83D\uDE00","rejected":"r"}`,
			want: Record{Format: FormatDPO, DPO: DPO{Prompt: "😀", Chosen: "c😀", Rejected: "r"}}},
		{name: "array", format: FormatAlpaca, in: `[{"instruction":"i","output":"o"}]`, wantErr: true, wantRule: "type"},
		{name: "number", format: FormatDPO, in: `12`, wantErr: true, wantRule: "type"},
		{name: "null", format: FormatDPO, in: `null`, wantErr: true, wantRule: "type"},
		{name: "truncated", format: FormatAlpaca, in: `{"instruction":"i","output":"o"`, wantErr: true, wantRule: "json"},
		{name: "empty", format: FormatAlpaca, in: ``, wantErr: true, wantRule: "json"},
		{name: "trailing garbage", format: FormatAlpaca, in: `{"instruction":"i","output":"o"} x`, wantErr: true, wantRule: "json"},
		{name: "two objects", format: FormatAlpaca, in: `{"instruction":"i","output":"o"}{}`, wantErr: true, wantRule: "json"},
		{name: "trailing comma", format: FormatAlpaca, in: `{"instruction":"i","output":"o",}`, wantErr: true, wantRule: "json"},
		{name: "raw control char", format: FormatAlpaca, in: "{\"instruction\":\"a\tb\",\"output\":\"o\"}", wantErr: true, wantRule: "json"},
		{name: "bad number in extra", format: FormatAlpaca, in: `{"instruction":"i","output":"o","n":01}`, wantErr: true, wantRule: "json"},
		{name: "bad escape", format: FormatAlpaca, in: `{"instruction":"\x","output":"o"}`, wantErr: true, wantRule: "json"},
		{name: "sharegpt ok", format: FormatShareGPT,
			in:   `{"conversations":[{"from":"system","value":"s"},{"from":"human","value":"h","x":1},{"from":"gpt","value":"g"}],"id":7}`,
			want: Record{Format: FormatShareGPT, ShareGPT: ShareGPT{Conversations: []Turn{{From: "system", Value: "s"}, {From: "human", Value: "h"}, {From: "gpt", Value: "g"}}}}},
		{name: "sharegpt one turn", format: FormatShareGPT, in: `{"conversations":[{"from":"human","value":"h"}]}`,
			wantErr: true, wantField: "conversations", wantRule: "minItems"},
		{name: "sharegpt not array", format: FormatShareGPT, in: `{"conversations":{"0":{"from":"human","value":"h"}}}`,
			wantErr: true, wantField: "conversations", wantRule: "type"},
		{name: "sharegpt missing", format: FormatShareGPT, in: `{"messages":[]}`,
			wantErr: true, wantField: "conversations", wantRule: "required"},
		{name: "sharegpt bad speaker", format: FormatShareGPT, in: `{"conversations":[{"from":"human","value":"h"},{"from":"bot","value":"b"}]}`,
			wantErr: true, wantField: "conversations[1].from", wantRule: "enum"},
		{name: "sharegpt turn not object", format: FormatShareGPT, in: `{"conversations":[{"from":"human","value":"h"},"gpt: b"]}`,
			wantErr: true, wantField: "conversations[1]", wantRule: "type"},
		{name: "sharegpt missing value", format: FormatShareGPT, in: `{"conversations":[{"from":"human","value":"h"},{"from":"gpt"}]}`,
			wantErr: true, wantField: "conversations[1].value", wantRule: "required"},
		{name: "sharegpt empty value", format: FormatShareGPT, in: `{"conversations":[{"from":"human","value":"h"},{"from":"gpt","value":""}]}`,
			wantErr: true, wantField: "conversations[1].value", wantRule: "minLength"},
		{name: "sharegpt duplicate conversations last wins", format: FormatShareGPT,
			in:   `{"conversations":[1],"conversations":[{"from":"human","value":"h"},{"from":"gpt","value":"g"}]}`,
			want: Record{Format: FormatShareGPT, ShareGPT: ShareGPT{Conversations: []Turn{{From: "human", Value: "h"}, {From: "gpt", Value: "g"}}}}},
		{name: "dpo ok", format: FormatDPO, in: `{"prompt":"p","chosen":"c","rejected":"r"}`,
			want: Record{Format: FormatDPO, DPO: DPO{"p", "c", "r"}}},
		{name: "dpo missing rejected", format: FormatDPO, in: `{"prompt":"p","chosen":"c"}`,
			wantErr: true, wantField: "rejected", wantRule: "required"},
		{name: "dpo empty chosen", format: FormatDPO, in: `{"prompt":"p","chosen":"","rejected":"r"}`,
			wantErr: true, wantField: "chosen", wantRule: "minLength"},
		{name: "dpo bool prompt", format: FormatDPO, in: `{"prompt":true,"chosen":"c","rejected":"r"}`,
			wantErr: true, wantField: "prompt", wantRule: "type"},
		{name: "depth limit ok", format: FormatDPO, in: `{"prompt":"p","chosen":"c","rejected":"r","x":` + long(9999, "[") + long(9999, "]") + `}`,
			want: Record{Format: FormatDPO, DPO: DPO{"p", "c", "r"}}},
		{name: "depth limit exceeded", format: FormatDPO, in: `{"prompt":"p","chosen":"c","rejected":"r","x":` + long(10000, "[") + long(10000, "]") + `}`,
			wantErr: true, wantRule: "json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeRecord(tt.format, []byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("DecodeRecord() error = %v, wantErr %v", err, tt.wantErr)
			}
			checkAgainstSchema(t, tt.format, []byte(tt.in))
			if tt.wantErr {
				var ve *ValidationError
				if !errors.As(err, &ve) {
					t.Fatalf("error %T is not *ValidationError", err)
				}
				if ve.Field != tt.wantField || ve.Rule != tt.wantRule {
					t.Fatalf("got field %q rule %q (%s), want field %q rule %q", ve.Field, ve.Rule, ve.Message, tt.wantField, tt.wantRule)
				}
				return
			}
			if !bytes.Equal(got.CanonicalJSON(), tt.want.CanonicalJSON()) || got.Format != tt.want.Format {
				t.Fatalf("got %s, want %s", got.CanonicalJSON(), tt.want.CanonicalJSON())
			}
		})
	}
}

func TestDecodeRecordUnknownFormat(t *testing.T) {
	_, err := DecodeRecord("csv", []byte(`{}`))
	if !errors.Is(err, ErrUnknownFormat) || errors.Is(err, ErrInvalidRecord) {
		t.Fatalf("got %v, want ErrUnknownFormat", err)
	}
}

func TestValidationErrorMessage(t *testing.T) {
	_, err := DecodeRecord(FormatAlpaca, []byte(`{"instruction":"i","output":"`+strings.Repeat("a", 50001)+`"}`))
	want := `field "output": maxLength: 50001 characters exceeds the maximum of 50000`
	if err == nil || err.Error() != want {
		t.Fatalf("got %v, want %s", err, want)
	}
}

func TestCanonicalJSONAndID(t *testing.T) {
	a, err := DecodeRecord(FormatAlpaca, []byte(`{"instruction":"i <&>\u2028","output":"o\u0001\t","extra":1}`))
	if err != nil {
		t.Fatal(err)
	}
	b, err := DecodeRecord(FormatAlpaca, []byte("{ \"output\" : \"o\\u0001\\u0009\", \"input\":\"\", \"instruction\":\"i <&>\u2028\" }"))
	if err != nil {
		t.Fatal(err)
	}
	want := "{\"input\":\"\",\"instruction\":\"i <&>\u2028\",\"output\":\"o\\u0001\\t\"}"
	if got := string(a.CanonicalJSON()); got != want {
		t.Fatalf("CanonicalJSON = %s, want %s", got, want)
	}
	if a.ID() != b.ID() || len(a.ID()) != 64 || strings.ToLower(a.ID()) != a.ID() {
		t.Fatalf("IDs %s and %s differ or are malformed", a.ID(), b.ID())
	}
	c := a
	c.Alpaca.Input = "x"
	if c.ID() == a.ID() {
		t.Fatal("different records share an ID")
	}
	// The canonical form is valid JSON that decodes to the same strings.
	var m map[string]string
	if err := json.Unmarshal(a.CanonicalJSON(), &m); err != nil || m["output"] != "o\x01\t" {
		t.Fatalf("canonical JSON does not decode: %v %v", m, err)
	}
}

func TestSchemaCompiles(t *testing.T) {
	for _, f := range Formats() {
		if Schema(f) == nil || len(SchemaJSON(f)) == 0 {
			t.Fatalf("no schema for %s", f)
		}
	}
	if Schema("csv") != nil {
		t.Fatal("schema for unknown format")
	}
}

func TestValidateWithSchema(t *testing.T) {
	tests := []struct {
		name    string
		format  Format
		in      string
		wantErr bool
	}{
		{name: "valid", format: FormatDPO, in: `{"prompt":"p","chosen":"c","rejected":"r"}`},
		{name: "invalid", format: FormatDPO, in: `{"prompt":"p","chosen":"c"}`, wantErr: true},
		{name: "bad utf8", format: FormatDPO, in: "{\"prompt\":\"\xff\",\"chosen\":\"c\",\"rejected\":\"r\"}", wantErr: true},
		{name: "lone surrogate", format: FormatDPO, in: `{"prompt":"\ud800","chosen":"c","rejected":"r"}`, wantErr: true},
		{name: "unknown format", format: "x", in: `{}`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := ValidateWithSchema(tt.format, []byte(tt.in)); (err != nil) != tt.wantErr {
				t.Fatalf("ValidateWithSchema() = %v, wantErr %v", err, tt.wantErr)
			}
		})
	}
}

func TestRecordValidate(t *testing.T) {
	tests := []struct {
		name      string
		rec       Record
		wantErr   bool
		wantField string
		wantRule  string
	}{
		{name: "alpaca ok", rec: Record{Format: FormatAlpaca, Alpaca: Alpaca{Instruction: "i", Output: "o"}}},
		{name: "alpaca empty output", rec: Record{Format: FormatAlpaca, Alpaca: Alpaca{Instruction: "i"}},
			wantErr: true, wantField: "output", wantRule: "minLength"},
		{name: "alpaca bad utf8", rec: Record{Format: FormatAlpaca, Alpaca: Alpaca{Instruction: "i", Input: "\xff", Output: "o"}},
			wantErr: true, wantField: "input", wantRule: "utf8"},
		{name: "sharegpt ok", rec: Record{Format: FormatShareGPT, ShareGPT: ShareGPT{Conversations: []Turn{{From: "human", Value: "h"}, {From: "gpt", Value: "g"}}}}},
		{name: "sharegpt short", rec: Record{Format: FormatShareGPT, ShareGPT: ShareGPT{Conversations: []Turn{{From: "human", Value: "h"}}}},
			wantErr: true, wantField: "conversations", wantRule: "minItems"},
		{name: "sharegpt bad utf8", rec: Record{Format: FormatShareGPT, ShareGPT: ShareGPT{Conversations: []Turn{{From: "human", Value: "h"}, {From: "gpt", Value: "\xc3"}}}},
			wantErr: true, wantField: "conversations[1].value", wantRule: "utf8"},
		{name: "dpo ok", rec: Record{Format: FormatDPO, DPO: DPO{"p", "c", "r"}}},
		{name: "dpo empty rejected", rec: Record{Format: FormatDPO, DPO: DPO{"p", "c", ""}},
			wantErr: true, wantField: "rejected", wantRule: "minLength"},
		{name: "no format", rec: Record{}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.rec.Validate()
			if (err != nil) != tt.wantErr {
				t.Fatalf("Validate() = %v, wantErr %v", err, tt.wantErr)
			}
			var ve *ValidationError
			if tt.wantRule != "" && (!errors.As(err, &ve) || ve.Field != tt.wantField || ve.Rule != tt.wantRule) {
				t.Fatalf("Validate() = %v, want field %q rule %q", err, tt.wantField, tt.wantRule)
			}
		})
	}
}

// TestAppendCanonicalJSON: appending to a reused buffer gives the bytes of
// CanonicalJSON, whatever the buffer held before; ValidateCanonical of
// those bytes says what Validate says.
func TestAppendCanonicalJSON(t *testing.T) {
	recs := []Record{
		{Format: FormatAlpaca, Alpaca: Alpaca{Instruction: "tab\there", Input: "ü", Output: "\"q\""}},
		{Format: FormatAlpaca, Alpaca: Alpaca{Instruction: "no output"}},
		{Format: FormatAlpaca, Alpaca: Alpaca{Instruction: "bad \xff", Output: "o"}},
		{Format: FormatShareGPT, ShareGPT: ShareGPT{Conversations: []Turn{{From: "human", Value: "hi\n"}, {From: "gpt", Value: "yo"}}}},
		{Format: FormatDPO, DPO: DPO{Prompt: "p", Chosen: "c\u0001", Rejected: "r"}},
		{},
	}
	buf := []byte("stale bytes of another record")
	for _, r := range recs {
		buf = r.AppendCanonicalJSON(buf[:0])
		if want := r.CanonicalJSON(); string(buf) != string(want) {
			t.Errorf("%s: appended %s, want %s", r.Format, buf, want)
		}
		if got, want := fmt.Sprint(r.ValidateCanonical(buf)), fmt.Sprint(r.Validate()); got != want {
			t.Errorf("%+v: ValidateCanonical %s, Validate %s", r, got, want)
		}
	}
}
