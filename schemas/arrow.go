package schemas

import (
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// Arrow column names shared by every record kind.
const (
	ColumnID = "id"
	// MetadataFormatKey is the schema metadata key holding the Format.
	MetadataFormatKey = "largeforge.format"
)

// turnType is the Arrow type of one ShareGPT turn; weight is null but for
// a gpt turn kept out of the loss (Turn.Weight). Batches without the
// weight field (written before it) read as every turn trained on.
var turnType = arrow.StructOf(
	arrow.Field{Name: "from", Type: arrow.BinaryTypes.String},
	arrow.Field{Name: "value", Type: arrow.BinaryTypes.String},
	arrow.Field{Name: "weight", Type: arrow.PrimitiveTypes.Int8, Nullable: true},
)

var arrowSchemas = map[Format]*arrow.Schema{
	FormatAlpaca:   newArrowSchema(FormatAlpaca, utf8Field("instruction"), utf8Field("input"), utf8Field("output")),
	FormatShareGPT: newArrowSchema(FormatShareGPT, arrow.Field{Name: "conversations", Type: arrow.ListOf(turnType)}),
	FormatDPO:      newArrowSchema(FormatDPO, utf8Field("prompt"), utf8Field("chosen"), utf8Field("rejected")),
}

func utf8Field(name string) arrow.Field {
	return arrow.Field{Name: name, Type: arrow.BinaryTypes.String}
}

func newArrowSchema(f Format, fields ...arrow.Field) *arrow.Schema {
	all := append([]arrow.Field{utf8Field(ColumnID)}, fields...)
	md := arrow.NewMetadata([]string{MetadataFormatKey}, []string{string(f)})
	return arrow.NewSchema(all, &md)
}

// ArrowSchema returns the Arrow schema of f's records (nil for an unknown
// format): column "id" (utf8, the record ID) then the record's fields:
// alpaca: instruction, input, output (utf8); sharegpt: conversations
// (list<struct<from: utf8, value: utf8>>); dpo: prompt, chosen, rejected
// (utf8). The schema metadata holds MetadataFormatKey = f. The schema is
// shared and must not be modified.
func ArrowSchema(f Format) *arrow.Schema { return arrowSchemas[f] }

// FormatOfArrowSchema returns the Format recorded in a schema's metadata.
func FormatOfArrowSchema(s *arrow.Schema) (Format, bool) {
	v, ok := s.Metadata().GetValue(MetadataFormatKey)
	if !ok {
		return "", false
	}
	f := Format(v)
	return f, f.Valid()
}

// NewRecordBuilder returns a builder for f's Arrow schema; the caller
// releases it.
func NewRecordBuilder(mem memory.Allocator, f Format) (*array.RecordBuilder, error) {
	s := ArrowSchema(f)
	if s == nil {
		_, err := ParseFormat(string(f))
		return nil, err
	}
	return array.NewRecordBuilder(mem, s), nil
}

// AppendRecord appends r (and its ID) as one row to b, a builder of
// ArrowSchema(r.Format). A builder of another schema is an error wrapping
// ErrSchemaMismatch and nothing is appended.
func AppendRecord(b *array.RecordBuilder, r Record) error {
	return AppendRecordWithID(b, r, r.ID())
}

// AppendRecordWithID is AppendRecord with the ID already computed.
func AppendRecordWithID(b *array.RecordBuilder, r Record, id string) error {
	want := ArrowSchema(r.Format)
	if want == nil {
		_, err := ParseFormat(string(r.Format))
		return err
	}
	if got := b.Schema(); got != want && !got.Equal(want) {
		return fmt.Errorf("%w: builder schema %s is not the %s schema", ErrSchemaMismatch, got, r.Format)
	}
	b.Field(0).(*array.StringBuilder).Append(id)
	switch r.Format {
	case FormatAlpaca:
		b.Field(1).(*array.StringBuilder).Append(r.Alpaca.Instruction)
		b.Field(2).(*array.StringBuilder).Append(r.Alpaca.Input)
		b.Field(3).(*array.StringBuilder).Append(r.Alpaca.Output)
	case FormatShareGPT:
		lb := b.Field(1).(*array.ListBuilder)
		lb.Append(true)
		sb := lb.ValueBuilder().(*array.StructBuilder)
		from := sb.FieldBuilder(0).(*array.StringBuilder)
		value := sb.FieldBuilder(1).(*array.StringBuilder)
		weight := sb.FieldBuilder(2).(*array.Int8Builder)
		for _, t := range r.ShareGPT.Conversations {
			sb.Append(true)
			from.Append(t.From)
			value.Append(t.Value)
			if t.Weight != nil {
				weight.Append(int8(*t.Weight))
			} else {
				weight.AppendNull()
			}
		}
	case FormatDPO:
		b.Field(1).(*array.StringBuilder).Append(r.DPO.Prompt)
		b.Field(2).(*array.StringBuilder).Append(r.DPO.Chosen)
		b.Field(3).(*array.StringBuilder).Append(r.DPO.Rejected)
	}
	return nil
}

// RecordsToArrow builds one Arrow record batch of f's schema from recs (all
// of format f). The caller releases it.
func RecordsToArrow(mem memory.Allocator, f Format, recs []Record) (arrow.RecordBatch, error) {
	b, err := NewRecordBuilder(mem, f)
	if err != nil {
		return nil, err
	}
	defer b.Release()
	for i, r := range recs {
		if r.Format != f {
			return nil, fmt.Errorf("%w: record %d is %q, not %q", ErrSchemaMismatch, i, r.Format, f)
		}
		if err := AppendRecord(b, r); err != nil {
			return nil, err
		}
	}
	return b.NewRecordBatch(), nil
}

// RecordsFromArrow reads the rows of rec, a batch of f's Arrow schema, back
// into Records, with the stored IDs alongside (ids[i] is the "id" column of
// row i; it is not recomputed). Columns are found by name and checked by
// type, so batches read back from Parquet (other list element names,
// nullable flags) are accepted; a missing column, another type or a null
// value is an error wrapping ErrSchemaMismatch.
func RecordsFromArrow(f Format, rec arrow.RecordBatch) ([]Record, []string, error) {
	if !f.Valid() {
		_, err := ParseFormat(string(f))
		return nil, nil, err
	}
	n := int(rec.NumRows())
	ids, err := stringColumn(rec, ColumnID)
	if err != nil {
		return nil, nil, err
	}
	idOut := make([]string, n)
	for i := range idOut {
		idOut[i] = ids.Value(i)
	}
	out := make([]Record, n)
	switch f {
	case FormatAlpaca, FormatDPO:
		names := [3]string{"instruction", "input", "output"}
		if f == FormatDPO {
			names = [3]string{"prompt", "chosen", "rejected"}
		}
		var cols [3]*array.String
		for j, name := range names {
			if cols[j], err = stringColumn(rec, name); err != nil {
				return nil, nil, err
			}
		}
		for i := range out {
			out[i].Format = f
			if f == FormatAlpaca {
				out[i].Alpaca = Alpaca{Instruction: cols[0].Value(i), Input: cols[1].Value(i), Output: cols[2].Value(i)}
			} else {
				out[i].DPO = DPO{Prompt: cols[0].Value(i), Chosen: cols[1].Value(i), Rejected: cols[2].Value(i)}
			}
		}
	case FormatShareGPT:
		if err := readConversations(rec, out); err != nil {
			return nil, nil, err
		}
	}
	return out, idOut, nil
}

func column(rec arrow.RecordBatch, name string) (arrow.Array, error) {
	idx := rec.Schema().FieldIndices(name)
	if len(idx) != 1 {
		return nil, fmt.Errorf("%w: want one column %q, found %d", ErrSchemaMismatch, name, len(idx))
	}
	col := rec.Column(idx[0])
	if col.NullN() > 0 {
		return nil, fmt.Errorf("%w: column %q has %d nulls", ErrSchemaMismatch, name, col.NullN())
	}
	return col, nil
}

func stringColumn(rec arrow.RecordBatch, name string) (*array.String, error) {
	col, err := column(rec, name)
	if err != nil {
		return nil, err
	}
	s, ok := col.(*array.String)
	if !ok {
		return nil, fmt.Errorf("%w: column %q is %s, want utf8", ErrSchemaMismatch, name, col.DataType())
	}
	return s, nil
}

func readConversations(rec arrow.RecordBatch, out []Record) error {
	col, err := column(rec, "conversations")
	if err != nil {
		return err
	}
	list, ok := col.(*array.List)
	if !ok {
		return fmt.Errorf("%w: column conversations is %s, want list<struct<from, value>>", ErrSchemaMismatch, col.DataType())
	}
	turns, ok := list.ListValues().(*array.Struct)
	if !ok || turns.NullN() > 0 {
		return fmt.Errorf("%w: conversations items are %s (nulls: %v), want struct<from, value> without nulls", ErrSchemaMismatch, list.ListValues().DataType(), ok)
	}
	st := turns.DataType().(*arrow.StructType)
	fi, okf := st.FieldIdx("from")
	vi, okv := st.FieldIdx("value")
	if !okf || !okv {
		return fmt.Errorf("%w: conversations items are %s, want struct<from, value>", ErrSchemaMismatch, st)
	}
	from, ok1 := turns.Field(fi).(*array.String)
	value, ok2 := turns.Field(vi).(*array.String)
	if !ok1 || !ok2 || from.NullN() > 0 || value.NullN() > 0 {
		return fmt.Errorf("%w: conversations from/value must be utf8 without nulls", ErrSchemaMismatch)
	}
	var weight *array.Int8
	if wi, ok := st.FieldIdx("weight"); ok {
		if weight, ok = turns.Field(wi).(*array.Int8); !ok {
			return fmt.Errorf("%w: conversations weight is %s, want int8", ErrSchemaMismatch, turns.Field(wi).DataType())
		}
	}
	for i := range out {
		start, end := list.ValueOffsets(i)
		conv := make([]Turn, 0, end-start)
		for k := int(start); k < int(end); k++ {
			t := Turn{From: from.Value(k), Value: value.Value(k)}
			if weight != nil && weight.IsValid(k) {
				w := int(weight.Value(k))
				t.Weight = &w
			}
			conv = append(conv, t)
		}
		out[i] = Record{Format: FormatShareGPT, ShareGPT: ShareGPT{Conversations: conv}}
	}
	return nil
}
