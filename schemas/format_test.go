package schemas

import (
	"errors"
	"fmt"
	"testing"
)

func TestParseFormat(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Format
		wantErr bool
	}{
		{name: "alpaca", in: "alpaca", want: FormatAlpaca},
		{name: "sharegpt", in: "sharegpt", want: FormatShareGPT},
		{name: "dpo", in: "dpo", want: FormatDPO},
		{name: "case matters", in: "Alpaca", wantErr: true},
		{name: "spaces", in: " dpo", wantErr: true},
		{name: "empty", in: "", wantErr: true},
		{name: "other", in: "jsonl", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseFormat(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseFormat(%q) error = %v, wantErr %v", tt.in, err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, ErrUnknownFormat) {
				t.Fatalf("error %v does not wrap ErrUnknownFormat", err)
			}
			if got != tt.want {
				t.Fatalf("ParseFormat(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestDetectFormat(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		want   Format
		wantOK bool
	}{
		{name: "alpaca", in: `{"instruction":"i","output":"o"}`, want: FormatAlpaca, wantOK: true},
		{name: "alpaca output only", in: ` {"output":"o"}`, want: FormatAlpaca, wantOK: true},
		{name: "sharegpt", in: `{"id":1,"conversations":[]}`, want: FormatShareGPT, wantOK: true},
		{name: "sharegpt wins", in: `{"instruction":"i","conversations":[]}`, want: FormatShareGPT, wantOK: true},
		{name: "dpo chosen", in: `{"prompt":"p","chosen":"c"}`, want: FormatDPO, wantOK: true},
		{name: "dpo rejected", in: `{"rejected":"r"}`, want: FormatDPO, wantOK: true},
		{name: "dpo over alpaca", in: `{"output":"o","chosen":"c"}`, want: FormatDPO, wantOK: true},
		{name: "escaped key", in: `{"conv\u0065rsations":[]}`, want: FormatShareGPT, wantOK: true},
		{name: "nested keys do not count", in: `{"meta":{"instruction":"i"}}`},
		{name: "unknown keys", in: `{"text":"t"}`},
		{name: "truncated after key", in: `{"instruction":"i","out`, want: FormatAlpaca, wantOK: true},
		{name: "array", in: `[{"instruction":"i"}]`},
		{name: "empty", in: ``},
		{name: "garbage", in: `xyz`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := DetectFormat([]byte(tt.in))
			if got != tt.want || ok != tt.wantOK {
				t.Fatalf("DetectFormat(%s) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func ExampleDecodeRecord() {
	rec, err := DecodeRecord(FormatAlpaca, []byte(`{"output":"LLMs are neural networks.","instruction":"Summarize","extra":1}`))
	if err != nil {
		panic(err)
	}
	fmt.Println(rec.Alpaca.Instruction, "->", rec.Alpaca.Output)
	fmt.Println(string(rec.CanonicalJSON()))
	fmt.Println(len(rec.ID()))

	_, err = DecodeRecord(FormatShareGPT, []byte(`{"conversations":[{"from":"human","value":"hi"},{"from":"bot","value":"hello"}]}`))
	var ve *ValidationError
	if errors.As(err, &ve) {
		fmt.Println(ve.Field, ve.Rule, errors.Is(err, ErrInvalidRecord))
		fmt.Println(err)
	}
	// Output:
	// Summarize -> LLMs are neural networks.
	// {"input":"","instruction":"Summarize","output":"LLMs are neural networks."}
	// 64
	// conversations[1].from enum true
	// field "conversations[1].from": enum: "bot" is not one of "human", "gpt", "system"
}
