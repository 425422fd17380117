package schemas

import (
	"errors"
	"reflect"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

func mustDecode(t *testing.T, f Format, s string) Record {
	t.Helper()
	r, err := DecodeRecord(f, []byte(s))
	if err != nil {
		t.Fatalf("DecodeRecord(%s, %s): %v", f, s, err)
	}
	return r
}

func TestArrowRoundTrip(t *testing.T) {
	tests := []struct {
		name   string
		format Format
		rows   []string
	}{
		{name: "alpaca", format: FormatAlpaca, rows: []string{
			`{"instruction":"i1","input":"x","output":"o1"}`, `{"instruction":"i2 é","output":"o2\n"}`,
		}},
		{name: "sharegpt", format: FormatShareGPT, rows: []string{
			`{"conversations":[{"from":"human","value":"h"},{"from":"gpt","value":"g"}]}`,
			`{"conversations":[{"from":"system","value":"s"},{"from":"human","value":"h2"},{"from":"gpt","value":"g2"}]}`,
		}},
		{name: "dpo", format: FormatDPO, rows: []string{`{"prompt":"p","chosen":"c","rejected":"r"}`}},
		{name: "empty", format: FormatDPO},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
			defer mem.AssertSize(t, 0)
			var recs []Record
			for _, s := range tt.rows {
				recs = append(recs, mustDecode(t, tt.format, s))
			}
			batch, err := RecordsToArrow(mem, tt.format, recs)
			if err != nil {
				t.Fatal(err)
			}
			defer batch.Release()
			if !batch.Schema().Equal(ArrowSchema(tt.format)) || batch.NumRows() != int64(len(recs)) {
				t.Fatalf("batch schema %s rows %d", batch.Schema(), batch.NumRows())
			}
			if f, ok := FormatOfArrowSchema(batch.Schema()); !ok || f != tt.format {
				t.Fatalf("FormatOfArrowSchema = %q %v", f, ok)
			}
			got, ids, err := RecordsFromArrow(tt.format, batch)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(recs) || len(ids) != len(recs) {
				t.Fatalf("got %d records, %d ids, want %d", len(got), len(ids), len(recs))
			}
			for i := range recs {
				if !reflect.DeepEqual(got[i], recs[i]) || ids[i] != recs[i].ID() {
					t.Fatalf("row %d: got %+v id %s, want %+v id %s", i, got[i], ids[i], recs[i], recs[i].ID())
				}
			}
			if len(recs) > 1 { // a slice reads back its own rows
				sl := batch.NewSlice(1, int64(len(recs)))
				defer sl.Release()
				got, ids, err := RecordsFromArrow(tt.format, sl)
				if err != nil || !reflect.DeepEqual(got[0], recs[1]) || ids[0] != recs[1].ID() {
					t.Fatalf("slice: got %+v %v %v", got, ids, err)
				}
			}
		})
	}
}

func TestArrowMismatch(t *testing.T) {
	mem := memory.NewGoAllocator()
	b, err := NewRecordBuilder(mem, FormatAlpaca)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Release()
	dpo := mustDecode(t, FormatDPO, `{"prompt":"p","chosen":"c","rejected":"r"}`)
	if err := AppendRecord(b, dpo); !errors.Is(err, ErrSchemaMismatch) {
		t.Fatalf("AppendRecord(dpo into alpaca) = %v", err)
	}
	if err := AppendRecord(b, mustDecode(t, FormatAlpaca, `{"instruction":"i","output":"o"}`)); err != nil {
		t.Fatal(err)
	}
	batch := b.NewRecordBatch()
	defer batch.Release()
	if _, _, err := RecordsFromArrow(FormatDPO, batch); !errors.Is(err, ErrSchemaMismatch) {
		t.Fatalf("RecordsFromArrow(dpo of alpaca) = %v", err)
	}
	if _, _, err := RecordsFromArrow(FormatShareGPT, batch); !errors.Is(err, ErrSchemaMismatch) {
		t.Fatalf("RecordsFromArrow(sharegpt of alpaca) = %v", err)
	}
	if _, _, err := RecordsFromArrow("csv", batch); !errors.Is(err, ErrUnknownFormat) {
		t.Fatalf("RecordsFromArrow(csv) = %v", err)
	}
	if _, err := RecordsToArrow(mem, FormatAlpaca, []Record{dpo}); !errors.Is(err, ErrSchemaMismatch) {
		t.Fatalf("RecordsToArrow(mixed) = %v", err)
	}
	if ArrowSchema("csv") != nil {
		t.Fatal("schema for unknown format")
	}
}

// TestArrowReadsParquetShapedSchema reads a batch whose schema differs from
// ArrowSchema the way one read back from Parquet does: nullable fields, list
// element named "element", no metadata.
func TestArrowReadsParquetShapedSchema(t *testing.T) {
	mem := memory.NewGoAllocator()
	turn := arrow.StructOf(
		arrow.Field{Name: "from", Type: arrow.BinaryTypes.String, Nullable: true},
		arrow.Field{Name: "value", Type: arrow.BinaryTypes.String, Nullable: true},
	)
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "id", Type: arrow.BinaryTypes.String, Nullable: true},
		{Name: "conversations", Type: arrow.ListOfField(arrow.Field{Name: "element", Type: turn, Nullable: true}), Nullable: true},
	}, nil)
	b := array.NewRecordBuilder(mem, schema)
	defer b.Release()
	r := mustDecode(t, FormatShareGPT, `{"conversations":[{"from":"human","value":"h"},{"from":"gpt","value":"g"}]}`)
	if err := AppendRecord(b, r); !errors.Is(err, ErrSchemaMismatch) {
		t.Fatalf("AppendRecord into foreign schema = %v", err)
	}
	b.Field(0).(*array.StringBuilder).Append(r.ID())
	lb := b.Field(1).(*array.ListBuilder)
	lb.Append(true)
	sb := lb.ValueBuilder().(*array.StructBuilder)
	for _, tu := range r.ShareGPT.Conversations {
		sb.Append(true)
		sb.FieldBuilder(0).(*array.StringBuilder).Append(tu.From)
		sb.FieldBuilder(1).(*array.StringBuilder).Append(tu.Value)
	}
	batch := b.NewRecordBatch()
	defer batch.Release()
	got, ids, err := RecordsFromArrow(FormatShareGPT, batch)
	if err != nil || !reflect.DeepEqual(got[0], r) || ids[0] != r.ID() {
		t.Fatalf("got %+v %v %v", got, ids, err)
	}
}

func BenchmarkAppendRecordAlpaca(b *testing.B) {
	r, err := DecodeRecord(FormatAlpaca, alpacaRow(1))
	if err != nil {
		b.Fatal(err)
	}
	id := r.ID()
	rb, _ := NewRecordBuilder(memory.NewGoAllocator(), FormatAlpaca)
	defer rb.Release()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if err := AppendRecordWithID(rb, r, id); err != nil {
			b.Fatal(err)
		}
		if i%4096 == 4095 {
			rb.NewRecordBatch().Release()
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}
