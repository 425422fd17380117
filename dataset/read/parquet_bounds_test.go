package read

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/encoding/thrift"
	"github.com/parquet-go/parquet-go/format"
)

// boundedFile is a one-column Parquet file of text rows whose first page
// header is changed by edit (nil: left as it is), rebuilt around it.
func boundedFile(t *testing.T, edit func(*format.PageHeader)) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := parquet.Write(&buf, []fuzzText{{Text: "hello"}, {Text: "world"}}); err != nil {
		t.Fatal(err)
	}
	src := buf.Bytes()
	var proto thrift.CompactProtocol
	n := int64(binary.LittleEndian.Uint32(src[len(src)-8:]))
	var meta format.FileMetaData
	if err := thrift.Unmarshal(&proto, src[int64(len(src))-8-n:len(src)-8], &meta); err != nil {
		t.Fatal(err)
	}
	md := &meta.RowGroups[0].Columns[0].MetaData
	if len(meta.RowGroups) != 1 || len(meta.RowGroups[0].Columns) != 1 || md.DictionaryPageOffset != 0 {
		t.Fatalf("want one column chunk without a dictionary: %+v", meta.RowGroups)
	}
	chunk := src[md.DataPageOffset : md.DataPageOffset+md.TotalCompressedSize]
	var h format.PageHeader
	hn, err := decodeBounded(chunk, &h)
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(&h)
	}
	header, err := thrift.Marshal(&proto, &h)
	if err != nil {
		t.Fatal(err)
	}
	out := append([]byte(parquetMagic), header...)
	out = append(out, chunk[hn:]...)
	md.DataPageOffset, md.TotalCompressedSize = 4, int64(len(out)-4)
	meta.RowGroups[0].Columns[0].FileOffset = 4
	footer, err := thrift.Marshal(&proto, &meta)
	if err != nil {
		t.Fatal(err)
	}
	return withFooter(out, footer)
}

// withFooter appends footer, its length and PAR1 to body.
func withFooter(body, footer []byte) []byte {
	out := append(append([]byte{}, body...), footer...)
	out = binary.LittleEndian.AppendUint32(out, uint32(len(footer)))
	return append(out, parquetMagic...)
}

// Lengths in a Parquet file that claim more than the file holds are refused
// before parquet-go allocates them: each file opens with an ErrSource error
// naming the length, having allocated a few MiB at most (without the
// checks, from 100 MiB to gigabytes each). The file rebuilt unchanged reads.
func TestParquetLengthsBounded(t *testing.T) {
	huge := func(h *format.PageHeader) { h.UncompressedPageSize = 1 << 30 }
	for _, tc := range []struct {
		name, want string
		data       []byte
	}{
		{"footer length", "is more than its 16 bytes hold", []byte("PAR1\x15\x06\x15\x14\x15\x14\x15\x8ePAR1")},
		// Field 2 of the footer (schema), a list of 2^24 structs in 8 bytes.
		{"footer list", "list claims more elements", withFooter([]byte(parquetMagic), []byte{0x29, 0xfc, 0x80, 0x80, 0x80, 0x08, 0x00, 0x00})},
		{"compressed page size", "more than its column chunk holds", boundedFile(t, func(h *format.PageHeader) { h.CompressedPageSize = 1 << 30 })},
		{"uncompressed page size", "bytes uncompressed, over", boundedFile(t, huge)},
		{"page values", "values, over", boundedFile(t, func(h *format.PageHeader) { *dataPage(t, h).values = 1 << 30 })},
		{"page statistics", "page header", boundedFile(t, func(h *format.PageHeader) {
			dataPage(t, h).stats.MaxValue = bytes.Repeat([]byte("x"), 8)
		})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := tc.data
			if tc.name == "page statistics" {
				// The statistics' length claims 2^28 bytes: its varint
				// (8, 0x88 0x80 0x80 0x80 0x01 for 2^28+8) replaces 8.
				i := bytes.Index(data, append([]byte{8}, "xxxxxxxx"...))
				if i < 0 {
					t.Fatal("no statistics in the page header")
				}
				data = append(append(append([]byte{}, data[:i]...), 0x88, 0x80, 0x80, 0x80, 0x01), data[i+1:]...)
				// The chunk grew by 4 bytes: rebuild its footer.
				n := int64(binary.LittleEndian.Uint32(tc.data[len(tc.data)-8:]))
				var proto thrift.CompactProtocol
				var meta format.FileMetaData
				if err := thrift.Unmarshal(&proto, tc.data[int64(len(tc.data))-8-n:len(tc.data)-8], &meta); err != nil {
					t.Fatal(err)
				}
				meta.RowGroups[0].Columns[0].MetaData.TotalCompressedSize += 4
				footer, err := thrift.Marshal(&proto, &meta)
				if err != nil {
					t.Fatal(err)
				}
				data = withFooter(data[:int64(len(data))-8-n], footer)
			}
			path := filepath.Join(t.TempDir(), "in.parquet")
			if err := os.WriteFile(path, data, 0o644); err != nil {
				t.Fatal(err)
			}
			// A batch input's reader opens the file and reads its rows.
			fh, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer fh.Close()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			rp, err := NewRequestParquet(fh, 1<<16)
			for err == nil {
				_, _, err = rp.Next()
			}
			runtime.ReadMemStats(&after)
			if got := after.TotalAlloc - before.TotalAlloc; got > 16<<20 {
				t.Errorf("allocated %d bytes to refuse it (%v)", got, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("batch input: %v, want an error saying %q", err, tc.want)
			}
			// A dataset's reader refuses it as a source.
			src, err := Open(path, nil, 1<<16, "")
			if err == nil {
				src.Close()
				t.Fatal("opened")
			}
			if !errors.Is(err, ErrSource) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("dataset: %v, want an ErrSource error saying %q", err, tc.want)
			}
			t.Log(err)
		})
	}
	path := filepath.Join(t.TempDir(), "ok.parquet")
	if err := os.WriteFile(path, boundedFile(t, nil), 0o644); err != nil {
		t.Fatal(err)
	}
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	ok, err := NewRequestParquet(fh, 1<<16)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"hello", "world"} {
		data, _, err := ok.Next()
		if err != nil || !strings.Contains(string(data), want) {
			t.Fatalf("row %d: %s %v, want %q", i, data, err, want)
		}
	}
}

// dataPage is the values count and statistics of h's data page header,
// version 1 or 2.
func dataPage(t *testing.T, h *format.PageHeader) (p struct {
	values *int32
	stats  *format.Statistics
}) {
	t.Helper()
	switch {
	case h.DataPageHeaderV2.Valid:
		p.values, p.stats = &h.DataPageHeaderV2.V.NumValues, &h.DataPageHeaderV2.V.Statistics
	case h.DataPageHeader.Valid:
		p.values, p.stats = &h.DataPageHeader.V.NumValues, &h.DataPageHeader.V.Statistics
	default:
		t.Fatalf("page %v is no data page", h.Type)
	}
	return p
}
