package read

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/parquet-go/parquet-go/encoding/thrift"
	"github.com/parquet-go/parquet-go/format"
)

// Bounds of a Parquet file from outside (a dataset, a batch input).
// parquet-go allocates what a file's own lengths say before it can find
// them false: the footer's length, the element count of a list in the
// footer or in a page header, the length of a string in a page header, and
// a page's compressed and uncompressed sizes, up to 2 GiB each. A few
// malformed bytes made it allocate gigabytes per file (make fuzz's
// FuzzParquetSource worker was killed for it). checkParquet runs before
// parquet.OpenFile: it decodes the footer and every page header itself,
// with each length checked against the bytes that hold it, and each page's
// sizes against its column chunk and maxParquetPage. What parquet-go then
// decodes are the same bytes, found sound.

// maxParquetPage is the largest page read, compressed or not (writers make
// pages of about 1 MiB; a dataset row must fit one bus message).
const maxParquetPage = 256 << 20

// maxParquetPageValues bounds a page's count of values (each costs at
// least a level byte when decoded).
const maxParquetPageValues = 64 << 20

// maxParquetPageHeader bounds a page header (its statistics included).
const maxParquetPageHeader = 16 << 20

// parquetMagic opens and ends a Parquet file.
const parquetMagic = "PAR1"

// checkParquet checks the footer and page headers of r, of size bytes.
func checkParquet(r io.ReaderAt, size int64) error {
	if size < 12 {
		return fmt.Errorf("%d bytes are too few for a Parquet file (PAR1, footer, its length, PAR1)", size)
	}
	var tail [8]byte
	if _, err := r.ReadAt(tail[:], size-8); err != nil {
		return fmt.Errorf("read the footer length: %w", err)
	}
	if string(tail[4:]) != parquetMagic {
		return errors.New("it does not end in PAR1")
	}
	n := int64(binary.LittleEndian.Uint32(tail[:4]))
	if n > size-12 {
		return fmt.Errorf("its footer length %d is more than its %d bytes hold", n, size)
	}
	footer := make([]byte, n)
	if _, err := r.ReadAt(footer, size-8-n); err != nil {
		return fmt.Errorf("read the footer: %w", err)
	}
	var meta format.FileMetaData
	if _, err := decodeBounded(footer, &meta); err != nil {
		return fmt.Errorf("footer: %w", err)
	}
	return checkParquetPages(r, size, &meta)
}

// checkParquetPages walks the page headers of every column chunk of meta
// in r (size bytes), as parquet-go will: from the chunk's dictionary page
// (or its first data page) to the end of its compressed bytes.
func checkParquetPages(r io.ReaderAt, size int64, meta *format.FileMetaData) error {
	for g, rg := range meta.RowGroups {
		for c, cc := range rg.Columns {
			md := cc.MetaData
			where := func(at int64) string {
				return fmt.Sprintf("row group %d column %d (%v), page at %d", g, c, md.PathInSchema, at)
			}
			start := md.DataPageOffset
			if md.DictionaryPageOffset != 0 {
				start = md.DictionaryPageOffset
			}
			end := start + md.TotalCompressedSize
			if start < 4 || md.TotalCompressedSize < 0 || end > size || end < start {
				return fmt.Errorf("row group %d column %d (%v): its pages at %d, %d bytes, lie outside the file's %d bytes",
					g, c, md.PathInSchema, start, md.TotalCompressedSize, size)
			}
			for at := start; at < end; {
				var h format.PageHeader
				hn, err := decodeAt(r, at, end, &h)
				if err != nil {
					return fmt.Errorf("%s: %w", where(at), err)
				}
				pv := max(h.DataPageHeader.V.NumValues, h.DictionaryPageHeader.V.NumValues, h.DataPageHeaderV2.V.NumValues)
				switch n := int64(h.CompressedPageSize); {
				case n < 0 || n > end-at-hn:
					return fmt.Errorf("%s: it claims %d bytes, more than its column chunk holds", where(at), n)
				case h.UncompressedPageSize < 0 || h.UncompressedPageSize > maxParquetPage:
					return fmt.Errorf("%s: it claims %d bytes uncompressed, over the %d allowed", where(at), h.UncompressedPageSize, maxParquetPage)
				case pv < 0 || pv > maxParquetPageValues:
					return fmt.Errorf("%s: it claims %d values, over the %d allowed", where(at), pv, maxParquetPageValues)
				default:
					at += hn + n
				}
			}
		}
	}
	return nil
}

// decodeAt decodes the thrift struct at r's offset at (before end) into v
// and returns its length: read in a window that doubles until the struct
// fits it, up to maxParquetPageHeader.
func decodeAt(r io.ReaderAt, at, end int64, v any) (int64, error) {
	for window := int64(4 << 10); ; window *= 2 {
		w := min(window, end-at, maxParquetPageHeader)
		buf := make([]byte, w)
		if _, err := r.ReadAt(buf, at); err != nil {
			return 0, err
		}
		n, err := decodeBounded(buf, v)
		if err == nil {
			return int64(n), nil
		}
		if !errors.Is(err, io.ErrUnexpectedEOF) || w == end-at || w == maxParquetPageHeader {
			return 0, fmt.Errorf("page header: %w", err)
		}
	}
}

// decodeBounded decodes b's thrift (compact) struct into v, refusing a
// list, set or map that claims more elements than b has bytes left (each
// takes one at least); it returns the bytes the struct took.
func decodeBounded(b []byte, v any) (int, error) {
	var proto thrift.CompactProtocol
	br := &boundedReader{BytesReader: proto.NewReaderFromBytes(b), size: len(b)}
	err := thrift.NewDecoder(br).Decode(v)
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return br.BytesRead(), err
}

// boundedReader bounds a thrift reader's container sizes by its bytes left.
type boundedReader struct {
	thrift.BytesReader
	size int
}

// errTooMany: a container claims more elements than there are bytes.
var errTooMany = errors.New("a list claims more elements than there are bytes left")

func (r *boundedReader) left() int { return r.size - r.BytesRead() }

func (r *boundedReader) ReadList() (thrift.List, error) {
	l, err := r.BytesReader.ReadList()
	if err == nil && int(l.Size) > r.left() {
		return l, fmt.Errorf("%w (%d, %d bytes left): %w", errTooMany, l.Size, r.left(), io.ErrUnexpectedEOF)
	}
	return l, err
}

func (r *boundedReader) ReadSet() (thrift.Set, error) {
	l, err := r.ReadList()
	return thrift.Set(l), err
}

func (r *boundedReader) ReadMap() (thrift.Map, error) {
	m, err := r.BytesReader.ReadMap()
	if err == nil && int(m.Size) > r.left() {
		return m, fmt.Errorf("%w (%d, %d bytes left): %w", errTooMany, m.Size, r.left(), io.ErrUnexpectedEOF)
	}
	return m, err
}
