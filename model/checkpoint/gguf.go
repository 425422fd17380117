package checkpoint

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
)

// GGUF value types (ggml/include/gguf.h).
const (
	ggufUint8 uint32 = iota
	ggufInt8
	ggufUint16
	ggufInt16
	ggufUint32
	ggufInt32
	ggufFloat32
	ggufBool
	ggufString
	ggufArray
	ggufUint64
	ggufInt64
	ggufFloat64
)

// GGML tensor types this package reads.
const (
	ggmlF32  uint32 = 0
	ggmlF16  uint32 = 1
	ggmlBF16 uint32 = 30
)

const (
	ggufMagic            = "GGUF"
	ggufDefaultAlignment = 32
	ggufMaxDims          = 4
	ggufMaxArrayDepth    = 2
)

// ggufTensorInfo is one tensor entry of a GGUF header. Dims are in GGML
// order (fastest-varying first).
type ggufTensorInfo struct {
	Name   string
	Dims   []uint64
	Type   uint32
	Offset uint64 // relative to the data section
}

// ggufFile is a parsed GGUF header. Metadata values are uint64, int64,
// float64, bool, string or []any of those.
type ggufFile struct {
	Version  uint32
	Metadata map[string]any
	Tensors  []ggufTensorInfo
	DataBase int64 // absolute offset of the aligned data section
	KVEnd    int64 // offset where the metadata ends (it starts at 24): QuantizeGGUF copies it
}

// ggufReader reads little-endian GGUF fields, never allocating more than
// the bytes left in the file.
type ggufReader struct {
	r    *bufio.Reader
	pos  int64
	size int64
	name string
	err  error
}

func (g *ggufReader) fail(err error) {
	if g.err == nil {
		g.err = err
	}
}

func (g *ggufReader) bytes(n uint64) []byte {
	if g.err != nil {
		return nil
	}
	if n > uint64(g.size-g.pos) {
		g.fail(fmt.Errorf("gguf %s: %w: need %d bytes at offset %d, file has %d", g.name, ErrTruncated, n, g.pos, g.size))
		return nil
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(g.r, b); err != nil {
		g.fail(fmt.Errorf("gguf %s: %w at offset %d: %v", g.name, ErrTruncated, g.pos, err))
		return nil
	}
	g.pos += int64(n)
	return b
}

func (g *ggufReader) u8() uint8 {
	b := g.bytes(1)
	if b == nil {
		return 0
	}
	return b[0]
}

func (g *ggufReader) u16() uint16 {
	b := g.bytes(2)
	if b == nil {
		return 0
	}
	return binary.LittleEndian.Uint16(b)
}

func (g *ggufReader) u32() uint32 {
	b := g.bytes(4)
	if b == nil {
		return 0
	}
	return binary.LittleEndian.Uint32(b)
}

func (g *ggufReader) u64() uint64 {
	b := g.bytes(8)
	if b == nil {
		return 0
	}
	return binary.LittleEndian.Uint64(b)
}

func (g *ggufReader) str() string {
	n := g.u64()
	return string(g.bytes(n))
}

// minValueSize is the fewest bytes a value of type t occupies, used to
// bound array lengths by the bytes left.
func minValueSize(t uint32) uint64 {
	switch t {
	case ggufUint8, ggufInt8, ggufBool:
		return 1
	case ggufUint16, ggufInt16:
		return 2
	case ggufUint32, ggufInt32, ggufFloat32:
		return 4
	case ggufArray:
		return 12
	default: // 64-bit values and strings (8-byte length)
		return 8
	}
}

func (g *ggufReader) value(t uint32, depth int) any {
	if g.err != nil {
		return nil
	}
	switch t {
	case ggufUint8:
		return uint64(g.u8())
	case ggufInt8:
		return int64(int8(g.u8()))
	case ggufUint16:
		return uint64(g.u16())
	case ggufInt16:
		return int64(int16(g.u16()))
	case ggufUint32:
		return uint64(g.u32())
	case ggufInt32:
		return int64(int32(g.u32()))
	case ggufFloat32:
		return float64(math.Float32frombits(g.u32()))
	case ggufBool:
		return g.u8() != 0
	case ggufString:
		return g.str()
	case ggufUint64:
		return g.u64()
	case ggufInt64:
		return int64(g.u64())
	case ggufFloat64:
		return math.Float64frombits(g.u64())
	case ggufArray:
		if depth >= ggufMaxArrayDepth {
			g.fail(fmt.Errorf("gguf %s: %w: arrays nested deeper than %d", g.name, ErrBadHeader, ggufMaxArrayDepth))
			return nil
		}
		et := g.u32()
		n := g.u64()
		if g.err != nil {
			return nil
		}
		if et > ggufFloat64 {
			g.fail(fmt.Errorf("gguf %s: %w: array element type %d", g.name, ErrBadHeader, et))
			return nil
		}
		if n > uint64(g.size-g.pos)/minValueSize(et) {
			g.fail(fmt.Errorf("gguf %s: %w: array of %d elements beyond the file end", g.name, ErrTruncated, n))
			return nil
		}
		out := make([]any, 0, n)
		for i := uint64(0); i < n && g.err == nil; i++ {
			out = append(out, g.value(et, depth+1))
		}
		return out
	default:
		g.fail(fmt.Errorf("gguf %s: %w: value type %d", g.name, ErrBadHeader, t))
		return nil
	}
}

// readGGUFHeader parses the header, metadata and tensor infos of a GGUF
// (version 2 or 3) stream of the given size. Every count and length is
// checked against the bytes left before anything is allocated.
func readGGUFHeader(r io.Reader, size int64, name string) (*ggufFile, error) {
	g := &ggufReader{r: bufio.NewReaderSize(r, 1<<16), size: size, name: name}
	magic := g.bytes(4)
	if g.err != nil {
		return nil, g.err
	}
	if string(magic) != ggufMagic {
		return nil, fmt.Errorf("gguf %s: %w: magic %q, want %q", name, ErrBadHeader, magic, ggufMagic)
	}
	f := &ggufFile{Version: g.u32(), Metadata: map[string]any{}}
	if g.err == nil && f.Version != 2 && f.Version != 3 {
		return nil, fmt.Errorf("gguf %s: %w: version %d (want 2 or 3, little-endian)", name, ErrUnsupported, f.Version)
	}
	nTensors := g.u64()
	nKV := g.u64()
	if g.err != nil {
		return nil, g.err
	}
	left := uint64(size - g.pos)
	if nKV > left/12 || nTensors > left/24 {
		return nil, fmt.Errorf("gguf %s: %w: %d metadata entries and %d tensors cannot fit in %d bytes", name, ErrTruncated, nKV, nTensors, left)
	}
	for i := uint64(0); i < nKV && g.err == nil; i++ {
		key := g.str()
		t := g.u32()
		v := g.value(t, 0)
		if g.err == nil {
			f.Metadata[key] = v
		}
	}
	f.KVEnd = g.pos
	f.Tensors = make([]ggufTensorInfo, 0, nTensors)
	for i := uint64(0); i < nTensors && g.err == nil; i++ {
		ti := ggufTensorInfo{Name: g.str()}
		nd := g.u32()
		if g.err == nil && (nd == 0 || nd > ggufMaxDims) {
			return nil, fmt.Errorf("gguf %s: tensor %q: %w: %d dimensions", name, ti.Name, ErrBadHeader, nd)
		}
		for j := uint32(0); j < nd && g.err == nil; j++ {
			ti.Dims = append(ti.Dims, g.u64())
		}
		ti.Type = g.u32()
		ti.Offset = g.u64()
		f.Tensors = append(f.Tensors, ti)
	}
	if g.err != nil {
		return nil, g.err
	}
	align := uint64(ggufDefaultAlignment)
	if v, ok := f.Metadata["general.alignment"]; ok {
		a, ok := v.(uint64)
		if !ok || a == 0 || a&(a-1) != 0 || a > 1<<20 {
			return nil, fmt.Errorf("gguf %s: %w: general.alignment %v", name, ErrBadHeader, v)
		}
		align = a
	}
	base := (uint64(g.pos) + align - 1) / align * align
	f.DataBase = int64(base)
	return f, nil
}

// ggufTypeSize gives element bytes for the types this package reads.
func ggufTypeSize(t uint32) (int, string, bool) {
	switch t {
	case ggmlF32:
		return 4, "F32", true
	case ggmlF16:
		return 2, "F16", true
	case ggmlBF16:
		return 2, "BF16", true
	}
	return 0, "", false
}

// ggmlTypeName names common GGML types for error messages.
func ggmlTypeName(t uint32) string {
	names := map[uint32]string{2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1", 10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K"}
	if n, ok := names[t]; ok {
		return n
	}
	return fmt.Sprintf("type %d", t)
}

// readGGUFTensor reads one F32/F16/BF16 tensor, returning it with its shape
// in row-major (Hugging Face) order: the reverse of the GGML dims.
func readGGUFTensor(r io.ReaderAt, size int64, f *ggufFile, ti ggufTensorInfo, name string) (*Tensor, error) {
	dataLen := size - f.DataBase
	if dataLen < 0 || ti.Offset > uint64(dataLen) {
		return nil, fmt.Errorf("gguf %s: tensor %q: %w: offset %d beyond the data section", name, ti.Name, ErrTruncated, ti.Offset)
	}
	if _, _, q := ggmlBlock(ti.Type); q { // gguf_quant.go
		n, _, err := ggufTensorBytes(ti, uint64(dataLen)-ti.Offset)
		if err != nil {
			return nil, fmt.Errorf("gguf %s: tensor %q: %w", name, ti.Name, err)
		}
		return readGGUFQuant(r, f, ti, n, name)
	}
	width, dtype, ok := ggufTypeSize(ti.Type)
	if !ok {
		return nil, fmt.Errorf("gguf %s: tensor %q: %w %s (only F32, F16, BF16, Q8_0, Q4_0, Q4_K and Q6_K import)", name, ti.Name, ErrDType, ggmlTypeName(ti.Type))
	}
	shape := make([]int, len(ti.Dims))
	limit := uint64(dataLen-int64(ti.Offset)) / uint64(width)
	count := uint64(1)
	for i, d := range ti.Dims {
		if d != 0 && count > limit/d {
			return nil, fmt.Errorf("gguf %s: tensor %q: %w: dims %v need more bytes than the file holds", name, ti.Name, ErrTruncated, ti.Dims)
		}
		count *= d
		shape[len(ti.Dims)-1-i] = int(d)
	}
	if count > limit {
		return nil, fmt.Errorf("gguf %s: tensor %q: %w: dims %v need more bytes than the file holds", name, ti.Name, ErrTruncated, ti.Dims)
	}
	t, err := readTensorData(r, f.DataBase+int64(ti.Offset), dtype, shape, name, ti.Name)
	if err != nil {
		return nil, err
	}
	return t, nil
}

// checkGGUFLayout checks, before any tensor is read, that every tensor has
// a readable type, lies inside the file and shares no bytes with another,
// so that reading all of them allocates at most twice the file size.
func checkGGUFLayout(f *ggufFile, size int64, name string) error {
	type span struct {
		begin, end uint64
		name       string
	}
	dataLen := size - f.DataBase
	if dataLen < 0 {
		dataLen = 0
	}
	spans := make([]span, 0, len(f.Tensors))
	for _, ti := range f.Tensors {
		if ti.Offset > uint64(dataLen) {
			return fmt.Errorf("gguf %s: tensor %q: %w: offset %d beyond the data section", name, ti.Name, ErrTruncated, ti.Offset)
		}
		n, ok, err := ggufTensorBytes(ti, uint64(dataLen)-ti.Offset) // gguf_quant.go
		if !ok {
			return fmt.Errorf("gguf %s: tensor %q: %w %s (only F32, F16, BF16, Q8_0, Q4_0, Q4_K and Q6_K import)", name, ti.Name, ErrDType, ggmlTypeName(ti.Type))
		}
		if err != nil {
			return fmt.Errorf("gguf %s: tensor %q: %w", name, ti.Name, err)
		}
		spans = append(spans, span{ti.Offset, ti.Offset + n, ti.Name})
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i].begin < spans[j].begin })
	for i := 1; i < len(spans); i++ {
		if spans[i].begin < spans[i-1].end {
			return fmt.Errorf("gguf %s: tensor %q: %w: data overlaps tensor %q", name, spans[i].name, ErrBadHeader, spans[i-1].name)
		}
	}
	return nil
}

// openGGUF opens and parses a GGUF file's header.
func openGGUF(path string) (*os.File, *ggufFile, int64, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("open gguf: %w", err)
	}
	st, err := fh.Stat()
	if err != nil {
		fh.Close()
		return nil, nil, 0, fmt.Errorf("stat gguf %s: %w", path, err)
	}
	f, err := readGGUFHeader(fh, st.Size(), path)
	if err != nil {
		fh.Close()
		return nil, nil, 0, err
	}
	return fh, f, st.Size(), nil
}
