package checkpoint

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"unsafe"
)

// Tensor is a dense row-major float32 tensor. A scalar has an empty Shape
// and one element.
type Tensor struct {
	Shape []int
	Data  []float32
	Quant *QuantTensor // a quantized weight's quantized form, Data its dequantized values; nil for float
}

// NumElements returns the product of the shape.
func (t *Tensor) NumElements() int {
	n := 1
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// maxHeaderBytes bounds a safetensors JSON header (the reference
// implementation uses the same 100 MB limit).
const maxHeaderBytes = 100 << 20

// dtypeSize gives the byte width of the dtypes this package reads.
// I32 holds the packed values of quantized weights (quant_files.go); it is
// not read as float.
var dtypeSize = map[string]int{"F32": 4, "F16": 2, "BF16": 2, "I32": 4}

// stEntry is one tensor of a safetensors header.
type stEntry struct {
	Name        string
	DType       string   `json:"dtype"`
	Shape       []int    `json:"shape"`
	DataOffsets [2]int64 `json:"data_offsets"`
}

// stHeader is a parsed and checked safetensors header.
type stHeader struct {
	Entries  []stEntry // sorted by data offset
	Metadata map[string]string
	DataBase int64 // file offset of the data section
}

// readSTHeader reads and checks the header of a safetensors file of the given
// size: every tensor has a known dtype, a shape whose byte size matches its
// offsets, and offsets inside the file. Nothing is allocated in proportion to
// anything but the header length, which is checked against size first.
func readSTHeader(r io.ReaderAt, size int64, name string) (*stHeader, error) {
	if size < 8 {
		return nil, fmt.Errorf("safetensors %s: %w: %d bytes, need at least 8", name, ErrTruncated, size)
	}
	var lenBuf [8]byte
	if _, err := r.ReadAt(lenBuf[:], 0); err != nil {
		return nil, fmt.Errorf("safetensors %s: read header length: %w", name, err)
	}
	n := binary.LittleEndian.Uint64(lenBuf[:])
	if n > uint64(size-8) {
		return nil, fmt.Errorf("safetensors %s: %w: header length %d beyond file size %d", name, ErrTruncated, n, size)
	}
	if n > maxHeaderBytes {
		return nil, fmt.Errorf("safetensors %s: %w: header length %d over %d", name, ErrBadHeader, n, maxHeaderBytes)
	}
	raw := make([]byte, n)
	if _, err := r.ReadAt(raw, 8); err != nil {
		return nil, fmt.Errorf("safetensors %s: read header: %w", name, err)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return nil, fmt.Errorf("safetensors %s: %w: %v", name, ErrBadHeader, err)
	}
	h := &stHeader{DataBase: 8 + int64(n)}
	dataLen := size - h.DataBase
	keys := make([]string, 0, len(fields))
	for key := range fields {
		keys = append(keys, key)
	}
	sort.Strings(keys) // deterministic errors
	for _, key := range keys {
		val := fields[key]
		if key == "__metadata__" {
			if err := json.Unmarshal(val, &h.Metadata); err != nil {
				return nil, fmt.Errorf("safetensors %s: %w: __metadata__ must map strings to strings: %v", name, ErrBadHeader, err)
			}
			continue
		}
		e := stEntry{Name: key}
		if err := json.Unmarshal(val, &e); err != nil {
			return nil, fmt.Errorf("safetensors %s: tensor %q: %w: %v", name, key, ErrBadHeader, err)
		}
		width, ok := dtypeSize[e.DType]
		if !ok {
			return nil, fmt.Errorf("safetensors %s: tensor %q: %w %q (want F32, F16 or BF16)", name, key, ErrDType, e.DType)
		}
		begin, end := e.DataOffsets[0], e.DataOffsets[1]
		if begin < 0 || end < begin {
			return nil, fmt.Errorf("safetensors %s: tensor %q: %w: data_offsets %v", name, key, ErrBadHeader, e.DataOffsets)
		}
		if end > dataLen {
			return nil, fmt.Errorf("safetensors %s: tensor %q: %w: data ends at %d, file has %d data bytes", name, key, ErrTruncated, end, dataLen)
		}
		count, ok := numElements(e.Shape, (end-begin)/int64(width))
		if !ok || end-begin != count*int64(width) {
			return nil, fmt.Errorf("safetensors %s: tensor %q: %w: shape %v %s does not match data_offsets %v", name, key, ErrShape, e.Shape, e.DType, e.DataOffsets)
		}
		h.Entries = append(h.Entries, e)
	}
	sort.Slice(h.Entries, func(i, j int) bool {
		if h.Entries[i].DataOffsets[0] != h.Entries[j].DataOffsets[0] {
			return h.Entries[i].DataOffsets[0] < h.Entries[j].DataOffsets[0]
		}
		return h.Entries[i].Name < h.Entries[j].Name
	})
	// Tensors must not share bytes: this bounds what a reader allocates by
	// the file size, whatever the header says.
	var prevEnd int64
	prevName := ""
	for _, e := range h.Entries {
		if e.DataOffsets[0] < prevEnd {
			return nil, fmt.Errorf("safetensors %s: tensor %q: %w: data_offsets %v overlap tensor %q", name, e.Name, ErrBadHeader, e.DataOffsets, prevName)
		}
		prevEnd, prevName = e.DataOffsets[1], e.Name
	}
	return h, nil
}

// numElements multiplies a shape, failing on a negative dimension or a
// product above limit (which also rules out overflow).
func numElements(shape []int, limit int64) (int64, bool) {
	n := int64(1)
	for _, d := range shape {
		if d < 0 {
			return 0, false
		}
		if d == 0 {
			n = 0
			continue
		}
		if n > limit/int64(d) {
			return 0, false
		}
		n *= int64(d)
	}
	return n, n <= limit || n == 0
}

// readSafetensors reads every tensor of a safetensors stream as float32.
func readSafetensors(r io.ReaderAt, size int64, name string) (map[string]*Tensor, map[string]string, error) {
	h, err := readSTHeader(r, size, name)
	if err != nil {
		return nil, nil, err
	}
	out := make(map[string]*Tensor, len(h.Entries))
	for _, e := range h.Entries {
		t, err := readTensorData(r, h.DataBase+e.DataOffsets[0], e.DType, e.Shape, name, e.Name)
		if err != nil {
			return nil, nil, err
		}
		out[e.Name] = t
	}
	return out, h.Metadata, nil
}

// readTensorData reads one tensor's bytes at off and converts them to float32.
// The caller has checked that the bytes lie inside the file.
func readTensorData(r io.ReaderAt, off int64, dtype string, shape []int, file, tensor string) (*Tensor, error) {
	count := 1
	for _, d := range shape {
		count *= d
	}
	t := &Tensor{Shape: append([]int{}, shape...), Data: make([]float32, count)}
	if count == 0 {
		return t, nil
	}
	fail := func(err error) error {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			err = ErrTruncated
		}
		return fmt.Errorf("%s: tensor %q: read %s data: %w", file, tensor, dtype, err)
	}
	switch dtype {
	case "F32":
		buf := unsafe.Slice((*byte)(unsafe.Pointer(&t.Data[0])), count*4)
		if _, err := r.ReadAt(buf, off); err != nil {
			return nil, fail(err)
		}
		if !littleEndian {
			for i := range t.Data {
				t.Data[i] = math.Float32frombits(binary.LittleEndian.Uint32(buf[4*i:]))
			}
		}
	case "F16", "BF16":
		// Read the 2-byte values into the front half of the float32 slice's
		// memory, then widen them in place from the back: element i is read
		// from bytes [2i, 2i+2) before bytes [4i, 4i+4) are written.
		buf := unsafe.Slice((*byte)(unsafe.Pointer(&t.Data[0])), count*4)
		if _, err := r.ReadAt(buf[:count*2], off); err != nil {
			return nil, fail(err)
		}
		if dtype == "BF16" {
			for i := count - 1; i >= 0; i-- {
				t.Data[i] = bf16ToF32(binary.LittleEndian.Uint16(buf[2*i:]))
			}
		} else {
			for i := count - 1; i >= 0; i-- {
				t.Data[i] = f16ToF32(binary.LittleEndian.Uint16(buf[2*i:]))
			}
		}
	default:
		return nil, fmt.Errorf("%s: tensor %q: %w %q", file, tensor, ErrDType, dtype)
	}
	return t, nil
}

var littleEndian = func() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1
}()

// ReadSafetensors reads every tensor of a safetensors file as float32 (F32,
// F16 and BF16 are accepted) and returns them with the header's
// __metadata__. Offsets are checked against the file size before anything
// is allocated; a short file gives ErrTruncated naming the file and tensor.
func ReadSafetensors(path string) (map[string]*Tensor, map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("open safetensors: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("stat safetensors %s: %w", path, err)
	}
	return readSafetensors(f, st.Size(), path)
}

// WriteSafetensors writes tensors as F32 safetensors, sorted by name, with
// an 8-byte aligned header, to a temporary file renamed onto path.
func WriteSafetensors(path string, tensors map[string]*Tensor, metadata map[string]string) error {
	names := make([]string, 0, len(tensors))
	for name, t := range tensors {
		if t == nil {
			return fmt.Errorf("write safetensors %s: tensor %q: %w: nil tensor", path, name, ErrShape)
		}
		for _, d := range t.Shape {
			if d < 0 {
				return fmt.Errorf("write safetensors %s: tensor %q: %w: negative dimension in %v", path, name, ErrShape, t.Shape)
			}
		}
		if t.NumElements() != len(t.Data) {
			return fmt.Errorf("write safetensors %s: tensor %q: %w: shape %v has %d elements, data %d", path, name, ErrShape, t.Shape, t.NumElements(), len(t.Data))
		}
		if name == "__metadata__" || name == "" {
			return fmt.Errorf("write safetensors %s: %w: reserved tensor name %q", path, ErrBadHeader, name)
		}
		names = append(names, name)
	}
	sort.Strings(names)
	header := make(map[string]any, len(names)+1)
	if len(metadata) > 0 {
		header["__metadata__"] = metadata
	}
	var off int64
	for _, name := range names {
		t := tensors[name]
		shape := t.Shape
		if shape == nil {
			shape = []int{}
		}
		end := off + int64(4*len(t.Data))
		header[name] = map[string]any{"dtype": "F32", "shape": shape, "data_offsets": [2]int64{off, end}}
		off = end
	}
	hb, err := json.Marshal(header)
	if err != nil {
		return fmt.Errorf("write safetensors %s: encode header: %w", path, err)
	}
	for len(hb)%8 != 0 {
		hb = append(hb, ' ')
	}
	return writeAtomic(path, func(w io.Writer) error {
		var lenBuf [8]byte
		binary.LittleEndian.PutUint64(lenBuf[:], uint64(len(hb)))
		if _, err := w.Write(lenBuf[:]); err != nil {
			return err
		}
		if _, err := w.Write(hb); err != nil {
			return err
		}
		var scratch []byte
		for _, name := range names {
			data := tensors[name].Data
			if len(data) == 0 {
				continue
			}
			if littleEndian {
				if _, err := w.Write(unsafe.Slice((*byte)(unsafe.Pointer(&data[0])), 4*len(data))); err != nil {
					return err
				}
				continue
			}
			scratch = scratch[:0]
			for _, v := range data {
				scratch = binary.LittleEndian.AppendUint32(scratch, math.Float32bits(v))
			}
			if _, err := w.Write(scratch); err != nil {
				return err
			}
		}
		return nil
	})
}

// writeAtomic writes a file through fill to a temporary name in the same
// directory, syncs it and renames it onto path.
func writeAtomic(path string, fill func(w io.Writer) error) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	bw := bufio.NewWriterSize(tmp, 1<<20)
	if err = fill(bw); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = bw.Flush(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	if err = tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("chmod %s: %w", path, err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("close %s: %w", path, err)
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("rename onto %s: %w", path, err)
	}
	return nil
}

// writeJSONAtomic writes v as indented JSON (HTML characters unescaped)
// with a trailing newline.
func writeJSONAtomic(path string, v any) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	return writeAtomic(path, func(w io.Writer) error {
		_, err := w.Write(buf.Bytes())
		return err
	})
}

// f16ToF32 converts IEEE 754 half precision bits to float32, subnormals,
// infinities and NaNs included.
func f16ToF32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f: // inf or NaN
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	case exp == 0:
		if mant == 0 {
			return math.Float32frombits(sign)
		}
		// subnormal: value = mant * 2^-24
		f := float32(mant) * (1.0 / (1 << 24))
		if sign != 0 {
			f = -f
		}
		return f
	default:
		return math.Float32frombits(sign | (exp+112)<<23 | mant<<13)
	}
}

// bf16ToF32 converts bfloat16 bits to float32 (exact).
func bf16ToF32(h uint16) float32 {
	return math.Float32frombits(uint32(h) << 16)
}
