package schemas

import "fmt"

// Format names a training data format of DATA_DICTIONARY §1.
type Format string

// The training data formats.
const (
	FormatAlpaca   Format = "alpaca"
	FormatShareGPT Format = "sharegpt"
	FormatDPO      Format = "dpo"
)

// Formats lists every Format in a stable order.
func Formats() []Format { return []Format{FormatAlpaca, FormatShareGPT, FormatDPO} }

// Valid reports whether f is one of the known formats.
func (f Format) Valid() bool {
	switch f {
	case FormatAlpaca, FormatShareGPT, FormatDPO:
		return true
	}
	return false
}

// ParseFormat returns the Format named exactly s ("alpaca", "sharegpt",
// "dpo"). Any other name is an error wrapping ErrUnknownFormat.
func ParseFormat(s string) (Format, error) {
	f := Format(s)
	if !f.Valid() {
		return "", fmt.Errorf("%w: %q (want alpaca, sharegpt or dpo)", ErrUnknownFormat, s)
	}
	return f, nil
}

// DetectFormat guesses the format of one JSON object from its top-level
// keys: "conversations" means sharegpt, "chosen" or "rejected" means dpo,
// "instruction" or "output" means alpaca (checked in that order). It reports
// false when data is not a JSON object or has none of these keys. It does not
// validate the record.
func DetectFormat(data []byte) (Format, bool) {
	s := scanner{data: data}
	s.skipWS()
	if s.pos >= len(s.data) || s.data[s.pos] != '{' {
		return "", false
	}
	var conv, dpo, alpaca bool
	err := s.scanObjectKeys(func(key string) {
		switch key {
		case "conversations":
			conv = true
		case "chosen", "rejected":
			dpo = true
		case "instruction", "output":
			alpaca = true
		}
	})
	if err != nil && !conv && !dpo && !alpaca {
		return "", false
	}
	switch {
	case conv:
		return FormatShareGPT, true
	case dpo:
		return FormatDPO, true
	case alpaca:
		return FormatAlpaca, true
	}
	return "", false
}
