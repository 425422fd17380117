package schemas

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Length limits of the §1 JSON Schemas, in Unicode code points.
const (
	AlpacaInstructionMaxLen = 10000
	AlpacaInputMaxLen       = 10000
	AlpacaOutputMaxLen      = 50000
	ShareGPTMinTurns        = 2
)

// ShareGPT speakers allowed in conversations[].from, in the schema's order.
const (
	SpeakerHuman  = "human"
	SpeakerGPT    = "gpt"
	SpeakerSystem = "system"
)

// Alpaca is an instruction-following record (§1.1). An absent input is "".
type Alpaca struct {
	Instruction string `json:"instruction"`
	Input       string `json:"input"`
	Output      string `json:"output"`
}

// ShareGPT is a multi-turn conversation record (§1.2).
type ShareGPT struct {
	Conversations []Turn `json:"conversations"`
}

// Turn is one turn of a ShareGPT conversation; From is "human", "gpt" or
// "system". Weight, on a gpt turn only, is 0 for a turn kept out of the
// loss (context the model is not trained to say: OpenAI's per-message
// "weight": 0); nil (or "weight": 1 on the wire) is a turn trained on.
type Turn struct {
	From   string `json:"from"`
	Value  string `json:"value"`
	Weight *int   `json:"weight,omitempty"`
}

// Trained reports whether a gpt turn is in the loss (its Weight is not 0).
func (t Turn) Trained() bool { return t.From == SpeakerGPT && (t.Weight == nil || *t.Weight != 0) }

// DPO is a preference record (§1.3).
type DPO struct {
	Prompt   string `json:"prompt"`
	Chosen   string `json:"chosen"`
	Rejected string `json:"rejected"`
}

// Record is one validated training record; exactly one of Alpaca, ShareGPT
// and DPO is set, the one Format names.
type Record struct {
	Format   Format
	Alpaca   Alpaca
	ShareGPT ShareGPT
	DPO      DPO
}

// ValidationError describes why one training record was rejected.
// errors.Is(err, ErrInvalidRecord) holds for every ValidationError.
type ValidationError struct {
	// Field is the path of the offending field: "instruction",
	// "conversations[2].from", or "" for the whole record.
	Field string
	// Rule is the JSON Schema keyword or rule broken: "json", "type",
	// "required", "minLength", "maxLength", "enum", "minItems", "utf8"
	// (invalid UTF-8, or a lone UTF-16 surrogate escape such as \ud800).
	Rule string
	// Message is human readable and names the field and rule, e.g.
	// `field "output": maxLength: 50001 characters exceeds the maximum of 50000`.
	Message string
}

// Error returns Message.
func (e *ValidationError) Error() string { return e.Message }

// Is reports whether target is ErrInvalidRecord.
func (e *ValidationError) Is(target error) bool { return target == ErrInvalidRecord }

func newValidationError(field, rule, format string, args ...any) *ValidationError {
	where := "record"
	if field != "" {
		where = fmt.Sprintf("field %q", field)
	}
	return &ValidationError{
		Field:   field,
		Rule:    rule,
		Message: where + ": " + rule + ": " + fmt.Sprintf(format, args...),
	}
}

// scanError turns a scanner error met inside field into a ValidationError.
func scanError(field string, err error) *ValidationError {
	if errors.Is(err, errBadUTF8) {
		return newValidationError(field, "utf8", "invalid UTF-8 in string")
	}
	if errors.Is(err, errLoneSurrogate) {
		return newValidationError(field, "utf8", "%v in string (half of a UTF-16 pair stands for no character)", err)
	}
	return newValidationError("", "json", "invalid JSON: %v", err)
}

func typeError(field string, got jsonKind, want string) *ValidationError {
	return newValidationError(field, "type", "got %s, want %s", got, want)
}

// CanonicalJSON returns the record's dictionary fields as JSON with keys
// sorted, no insignificant whitespace and a fixed escaping (RFC 8785 style:
// only '"', '\\' and control characters are escaped; \b \t \n \f \r use their
// short forms, other controls \u00xx in lower-case hex; everything else,
// including non-ASCII, is written as UTF-8). Properties outside the
// dictionary are not included, and an absent alpaca input is "", so
// records that differ only in key order, whitespace, escaping, extra keys or
// absent-versus-empty input give the same bytes.
func (r Record) CanonicalJSON() []byte { return r.AppendCanonicalJSON(nil) }

// AppendCanonicalJSON appends CanonicalJSON() to b: a buffer reused from
// record to record (ingest, the dataset sink) allocates nothing.
func (r Record) AppendCanonicalJSON(b []byte) []byte {
	switch r.Format {
	case FormatAlpaca:
		a := r.Alpaca
		b = slices.Grow(b, len(a.Input)+len(a.Instruction)+len(a.Output)+48)
		b = append(b, `{"input":`...)
		b = appendJSONString(b, a.Input)
		b = append(b, `,"instruction":`...)
		b = appendJSONString(b, a.Instruction)
		b = append(b, `,"output":`...)
		b = appendJSONString(b, a.Output)
		return append(b, '}')
	case FormatShareGPT:
		n := 24
		for _, t := range r.ShareGPT.Conversations {
			n += len(t.From) + len(t.Value) + 24
		}
		b = slices.Grow(b, n)
		b = append(b, `{"conversations":[`...)
		for i, t := range r.ShareGPT.Conversations {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"from":`...)
			b = appendJSONString(b, t.From)
			b = append(b, `,"value":`...)
			b = appendJSONString(b, t.Value)
			if t.Weight != nil {
				b = strconv.AppendInt(append(b, `,"weight":`...), int64(*t.Weight), 10)
			}
			b = append(b, '}')
		}
		return append(b, "]}"...)
	case FormatDPO:
		d := r.DPO
		b = slices.Grow(b, len(d.Chosen)+len(d.Prompt)+len(d.Rejected)+40)
		b = append(b, `{"chosen":`...)
		b = appendJSONString(b, d.Chosen)
		b = append(b, `,"prompt":`...)
		b = appendJSONString(b, d.Prompt)
		b = append(b, `,"rejected":`...)
		b = appendJSONString(b, d.Rejected)
		return append(b, '}')
	}
	return append(b, "{}"...)
}

// ID returns the lower-case hex SHA-256 of CanonicalJSON(): the record's
// stable identity (message ids are "<dataset>/<ID>").
func (r Record) ID() string { return RecordID(r.CanonicalJSON()) }

// RecordID is the id of the record whose canonical JSON is canon (Record.ID
// from canonical bytes already at hand): ingest gives it to each record it
// accepts, and the dataset sink recomputes it for each row it is sent.
func RecordID(canon []byte) string {
	sum := sha256.Sum256(canon)
	return hex.EncodeToString(sum[:])
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string with the canonical escaping.
// Invalid UTF-8 (impossible in a decoded Record) is written as U+FFFD.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				b = append(b, s[start:i]...)
				b = append(b, "\uFFFD"...)
				i++
				start = i
				continue
			}
			i += size
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\b':
			b = append(b, '\\', 'b')
		case '\t':
			b = append(b, '\\', 't')
		case '\n':
			b = append(b, '\\', 'n')
		case '\f':
			b = append(b, '\\', 'f')
		case '\r':
			b = append(b, '\\', 'r')
		default:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
		}
		i++
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// checkString applies a string property's minLength/maxLength (0 = none).
func checkString(field string, kind jsonKind, v string, minLen, maxLen int) *ValidationError {
	if kind != kindString {
		return typeError(field, kind, "string")
	}
	if minLen == 0 && maxLen == 0 {
		return nil
	}
	n := len(v)
	// A valid UTF-8 string has at most one code point per byte and at least
	// one when non-empty, so the byte length often settles both bounds.
	if minLen <= 1 && n >= minLen && (maxLen == 0 || n <= maxLen) {
		return nil
	}
	n = utf8.RuneCountInString(v)
	if n < minLen {
		return newValidationError(field, "minLength", "%d characters is below the minimum of %d", n, minLen)
	}
	if maxLen > 0 && n > maxLen {
		return newValidationError(field, "maxLength", "%d characters exceeds the maximum of %d", n, maxLen)
	}
	return nil
}

// DecodeRecord decodes one JSON object and validates it against f's §1 JSON
// Schema. It is a hand-written fast path that accepts exactly the documents
// that the compiled schema (Schema(f)) accepts, after encoding/json's
// decoding rules (duplicate keys: the last wins), and also rejects invalid
// UTF-8 inside strings. A rejected record gives a *ValidationError (which
// Is ErrInvalidRecord); an unknown f an error wrapping ErrUnknownFormat.
func DecodeRecord(f Format, data []byte) (Record, error) {
	var (
		rec Record
		err *ValidationError
	)
	switch f {
	case FormatAlpaca:
		rec.Alpaca, err = decodeAlpaca(data)
	case FormatShareGPT:
		rec.ShareGPT, err = decodeShareGPT(data)
	case FormatDPO:
		rec.DPO, err = decodeDPO(data)
	default:
		_, ferr := ParseFormat(string(f))
		return Record{}, ferr
	}
	if err != nil {
		return Record{}, err
	}
	rec.Format = f
	return rec, nil
}

// beginRecord positions s inside the top-level object, or explains why the
// document is not one.
func beginRecord(s *scanner) *ValidationError {
	s.skipWS()
	if s.pos < len(s.data) && s.data[s.pos] == '{' {
		s.pos++
		if err := s.push(); err != nil {
			return scanError("", err)
		}
		return nil
	}
	kind := s.peekKind()
	if err := s.skipValue(); err != nil {
		return scanError("", err)
	}
	if err := s.end(); err != nil {
		return scanError("", err)
	}
	return typeError("", kind, "object")
}

// field is one string property as decoded: last occurrence wins.
type field struct {
	kind jsonKind
	val  string
}

// readField reads the value at pos into f: strings are decoded, anything else
// is scanned and only its kind kept. Errors are the scanner's.
func (s *scanner) readField(f *field) error {
	f.kind = s.peekKind()
	if f.kind == kindString {
		v, err := s.readString()
		if err != nil {
			return err
		}
		f.val = v
		return nil
	}
	f.val = ""
	return s.skipValue()
}

// readNamedField is readField with errors reported against name.
func (s *scanner) readNamedField(name string, f *field) *ValidationError {
	if err := s.readField(f); err != nil {
		return scanError(name, err)
	}
	return nil
}

// skipMember skips the value of a property that the schema does not name.
func (s *scanner) skipMember() *ValidationError {
	if err := s.skipValue(); err != nil {
		return scanError("", err)
	}
	return nil
}

func decodeAlpaca(data []byte) (Alpaca, *ValidationError) {
	s := scanner{data: data}
	if err := beginRecord(&s); err != nil {
		return Alpaca{}, err
	}
	var instruction, input, output field
	for first := true; ; first = false {
		key, more, err := s.nextMember(first)
		if err != nil {
			return Alpaca{}, scanError("", err)
		}
		if !more {
			break
		}
		var verr *ValidationError
		switch string(key) {
		case "instruction":
			verr = s.readNamedField("instruction", &instruction)
		case "input":
			verr = s.readNamedField("input", &input)
		case "output":
			verr = s.readNamedField("output", &output)
		default:
			verr = s.skipMember()
		}
		if verr != nil {
			return Alpaca{}, verr
		}
	}
	if err := s.end(); err != nil {
		return Alpaca{}, scanError("", err)
	}
	if instruction.kind == kindAbsent {
		return Alpaca{}, requiredError("instruction")
	}
	if output.kind == kindAbsent {
		return Alpaca{}, requiredError("output")
	}
	if err := checkString("instruction", instruction.kind, instruction.val, 1, AlpacaInstructionMaxLen); err != nil {
		return Alpaca{}, err
	}
	if input.kind != kindAbsent {
		if err := checkString("input", input.kind, input.val, 0, AlpacaInputMaxLen); err != nil {
			return Alpaca{}, err
		}
	}
	if err := checkString("output", output.kind, output.val, 1, AlpacaOutputMaxLen); err != nil {
		return Alpaca{}, err
	}
	return Alpaca{Instruction: instruction.val, Input: input.val, Output: output.val}, nil
}

func requiredError(field string) *ValidationError {
	return newValidationError(field, "required", "missing required field")
}

func decodeDPO(data []byte) (DPO, *ValidationError) {
	s := scanner{data: data}
	if err := beginRecord(&s); err != nil {
		return DPO{}, err
	}
	var prompt, chosen, rejected field
	for first := true; ; first = false {
		key, more, err := s.nextMember(first)
		if err != nil {
			return DPO{}, scanError("", err)
		}
		if !more {
			break
		}
		var verr *ValidationError
		switch string(key) {
		case "prompt":
			verr = s.readNamedField("prompt", &prompt)
		case "chosen":
			verr = s.readNamedField("chosen", &chosen)
		case "rejected":
			verr = s.readNamedField("rejected", &rejected)
		default:
			verr = s.skipMember()
		}
		if verr != nil {
			return DPO{}, verr
		}
	}
	if err := s.end(); err != nil {
		return DPO{}, scanError("", err)
	}
	fields := [...]struct {
		name string
		f    *field
	}{{"prompt", &prompt}, {"chosen", &chosen}, {"rejected", &rejected}}
	for _, x := range fields {
		if x.f.kind == kindAbsent {
			return DPO{}, requiredError(x.name)
		}
	}
	for _, x := range fields {
		if err := checkString(x.name, x.f.kind, x.f.val, 1, 0); err != nil {
			return DPO{}, err
		}
	}
	return DPO{Prompt: prompt.val, Chosen: chosen.val, Rejected: rejected.val}, nil
}

// turnScan is one element of conversations as decoded.
type turnScan struct {
	kind        jsonKind // of the element
	from, value field
	weight      field // val holds a number's text
}

func decodeShareGPT(data []byte) (ShareGPT, *ValidationError) {
	s := scanner{data: data}
	if err := beginRecord(&s); err != nil {
		return ShareGPT{}, err
	}
	var (
		convKind jsonKind
		buf      [8]turnScan
		turns    = buf[:0]
	)
	for first := true; ; first = false {
		key, more, err := s.nextMember(first)
		if err != nil {
			return ShareGPT{}, scanError("", err)
		}
		if !more {
			break
		}
		if string(key) != "conversations" {
			if verr := s.skipMember(); verr != nil {
				return ShareGPT{}, verr
			}
			continue
		}
		convKind = s.peekKind()
		turns = turns[:0]
		if convKind != kindArray {
			if err := s.skipValue(); err != nil {
				return ShareGPT{}, scanError("conversations", err)
			}
			continue
		}
		var verr *ValidationError
		if turns, verr = s.readTurns(turns); verr != nil {
			return ShareGPT{}, verr
		}
	}
	if err := s.end(); err != nil {
		return ShareGPT{}, scanError("", err)
	}
	if convKind == kindAbsent {
		return ShareGPT{}, requiredError("conversations")
	}
	if convKind != kindArray {
		return ShareGPT{}, typeError("conversations", convKind, "array")
	}
	if len(turns) < ShareGPTMinTurns {
		return ShareGPT{}, newValidationError("conversations", "minItems", "%d items is below the minimum of %d", len(turns), ShareGPTMinTurns)
	}
	out := make([]Turn, len(turns))
	for i, t := range turns {
		if t.kind != kindObject {
			return ShareGPT{}, typeError(turnPath(i, ""), t.kind, "object")
		}
		if t.from.kind == kindAbsent {
			return ShareGPT{}, requiredError(turnPath(i, "from"))
		}
		if t.value.kind == kindAbsent {
			return ShareGPT{}, requiredError(turnPath(i, "value"))
		}
		if t.from.kind != kindString {
			return ShareGPT{}, typeError(turnPath(i, "from"), t.from.kind, "string")
		}
		switch t.from.val {
		case SpeakerHuman, SpeakerGPT, SpeakerSystem:
		default:
			return ShareGPT{}, newValidationError(turnPath(i, "from"), "enum", "%q is not one of %q, %q, %q", t.from.val, SpeakerHuman, SpeakerGPT, SpeakerSystem)
		}
		if t.value.kind != kindString || t.value.val == "" {
			return ShareGPT{}, checkString(turnPath(i, "value"), t.value.kind, t.value.val, 1, 0)
		}
		out[i] = Turn{From: t.from.val, Value: t.value.val}
		if t.weight.kind != kindAbsent {
			switch {
			case t.from.val != SpeakerGPT:
				return ShareGPT{}, newValidationError(turnPath(i, "weight"), "enum", "only gpt turns take a weight")
			case t.weight.kind != kindNumber || (t.weight.val != "0" && t.weight.val != "1"):
				return ShareGPT{}, newValidationError(turnPath(i, "weight"), "enum", "want 0 (not trained on) or 1")
			case t.weight.val == "0":
				zero := 0
				out[i].Weight = &zero
			}
		}
	}
	return ShareGPT{Conversations: out}, nil
}

func turnPath(i int, name string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "conversations[%d]", i)
	if name != "" {
		b.WriteByte('.')
		b.WriteString(name)
	}
	return b.String()
}

// readTurns reads the conversations array at pos.
func (s *scanner) readTurns(turns []turnScan) ([]turnScan, *ValidationError) {
	s.skipWS()
	s.pos++ // '['
	if err := s.push(); err != nil {
		return nil, scanError("", err)
	}
	for first := true; ; first = false {
		more, err := s.nextElement(first)
		if err != nil {
			return nil, scanError("", err)
		}
		if !more {
			return turns, nil
		}
		i := len(turns)
		t := turnScan{kind: s.peekKind()}
		if t.kind != kindObject {
			if err := s.skipValue(); err != nil {
				return nil, scanError(turnPath(i, ""), err)
			}
			turns = append(turns, t)
			continue
		}
		s.pos++ // '{'
		if err := s.push(); err != nil {
			return nil, scanError("", err)
		}
		for firstKey := true; ; firstKey = false {
			key, more, err := s.nextMember(firstKey)
			if err != nil {
				return nil, scanError("", err)
			}
			if !more {
				break
			}
			var verr *ValidationError
			switch string(key) {
			case "from":
				if err := s.readField(&t.from); err != nil {
					verr = scanError(turnPath(i, "from"), err)
				}
			case "value":
				if err := s.readField(&t.value); err != nil {
					verr = scanError(turnPath(i, "value"), err)
				}
			case "weight":
				start := s.pos
				if err := s.readField(&t.weight); err != nil {
					verr = scanError(turnPath(i, "weight"), err)
				} else if t.weight.kind == kindNumber {
					t.weight.val = strings.TrimSpace(string(s.data[start:s.pos]))
				}
			default:
				verr = s.skipMember()
			}
			if verr != nil {
				return nil, verr
			}
		}
		turns = append(turns, t)
	}
}

// Validate checks a Record built in code (or read back from Arrow) against
// its format's §1 schema, with the same rules and errors as DecodeRecord.
func (r Record) Validate() error { return r.validate(nil) }

// ValidateCanonical is Validate for a record whose CanonicalJSON the caller
// has at hand (canon, as the dataset sink has to check a row's id): it is
// not built again.
func (r Record) ValidateCanonical(canon []byte) error { return r.validate(canon) }

// validate is Validate with the record's canonical JSON, built when nil.
func (r Record) validate(canon []byte) error {
	if !r.Format.Valid() {
		_, err := ParseFormat(string(r.Format))
		return err
	}
	var bad string
	switch r.Format {
	case FormatAlpaca:
		bad = firstInvalidUTF8(
			"instruction", r.Alpaca.Instruction, "input", r.Alpaca.Input, "output", r.Alpaca.Output)
	case FormatDPO:
		bad = firstInvalidUTF8("prompt", r.DPO.Prompt, "chosen", r.DPO.Chosen, "rejected", r.DPO.Rejected)
	case FormatShareGPT:
		for i, t := range r.ShareGPT.Conversations {
			if bad = firstInvalidUTF8(turnPath(i, "from"), t.From, turnPath(i, "value"), t.Value); bad != "" {
				break
			}
		}
	}
	if bad != "" {
		return newValidationError(bad, "utf8", "invalid UTF-8 in string")
	}
	if canon == nil {
		canon = r.CanonicalJSON()
	}
	_, err := DecodeRecord(r.Format, canon)
	return err
}

// firstInvalidUTF8 takes name, value pairs and returns the first name whose
// value is not valid UTF-8, or "".
func firstInvalidUTF8(pairs ...string) string {
	for i := 0; i+1 < len(pairs); i += 2 {
		if !utf8.ValidString(pairs[i+1]) {
			return pairs[i]
		}
	}
	return ""
}
