package checkpoint

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
)

// QuantizeGGUF writes the GGUF file src to dst with every F32 matrix whose
// rows are whole blocks of 32 quantized by ggml's reference quantizers:
// Q8_0 for bits 8, Q4_0 for bits 4 (groupSize 0 or 32); the other tensors
// and the metadata are copied byte for byte. llama.cpp loads the result.
func QuantizeGGUF(src, dst string, bits, groupSize int) error {
	typ := ggmlQ8_0
	switch {
	case bits == 4 && (groupSize == 0 || groupSize == 32):
		typ = ggmlQ4_0
	case bits == 8 && groupSize == 0:
	default:
		return fmt.Errorf("quantize gguf %s: %w: %d bits, group size %d (GGUF blocks: 8 bits per channel as Q8_0, or 4 bits in groups of 32 as Q4_0)", src, ErrQuant, bits, groupSize)
	}
	fh, f, size, err := openGGUF(src)
	if err != nil {
		return err
	}
	defer fh.Close()
	if err := checkGGUFLayout(f, size, src); err != nil {
		return err
	}
	kv := make([]byte, f.KVEnd) // magic, version, counts, metadata
	if _, err := fh.ReadAt(kv, 0); err != nil {
		return fmt.Errorf("quantize gguf %s: read metadata: %w", src, err)
	}
	align := uint64(ggufDefaultAlignment)
	if a, ok := f.Metadata["general.alignment"].(uint64); ok {
		align = a
	}
	var data []byte
	infos := make([]ggufTensorInfo, len(f.Tensors))
	for i, ti := range f.Tensors {
		n, _, err := ggufTensorBytes(ti, uint64(size-f.DataBase)-ti.Offset)
		if err != nil {
			return fmt.Errorf("gguf %s: tensor %q: %w", src, ti.Name, err)
		}
		raw := make([]byte, n)
		if _, err := fh.ReadAt(raw, f.DataBase+int64(ti.Offset)); err != nil {
			return fmt.Errorf("gguf %s: tensor %q: %w", src, ti.Name, ErrTruncated)
		}
		if ti.Type == ggmlF32 && len(ti.Dims) == 2 && ti.Dims[0]%32 == 0 {
			raw = ggmlQuantizeRows(raw, typ)
			ti.Type = typ
		}
		for uint64(len(data))%align != 0 {
			data = append(data, 0)
		}
		ti.Offset = uint64(len(data))
		data = append(data, raw...)
		infos[i] = ti
	}
	head := kv // the tensor count (bytes 8-16) stays: one tensor out for each in
	for _, ti := range infos {
		head = binary.LittleEndian.AppendUint64(head, uint64(len(ti.Name)))
		head = append(head, ti.Name...)
		head = binary.LittleEndian.AppendUint32(head, uint32(len(ti.Dims)))
		for _, d := range ti.Dims {
			head = binary.LittleEndian.AppendUint64(head, d)
		}
		head = binary.LittleEndian.AppendUint32(head, ti.Type)
		head = binary.LittleEndian.AppendUint64(head, ti.Offset)
	}
	for uint64(len(head))%align != 0 {
		head = append(head, 0)
	}
	return writeAtomic(dst, func(w io.Writer) error {
		if _, err := w.Write(head); err != nil {
			return err
		}
		_, err := w.Write(data)
		return err
	})
}

// ggmlQuantizeRows quantizes little-endian float32 values, blocks of 32,
// as ggml's quantize_row_q8_0_ref or quantize_row_q4_0_ref do (float32
// arithmetic, the same rounding).
func ggmlQuantizeRows(raw []byte, typ uint32) []byte {
	n := len(raw) / 4
	var out []byte
	var x [32]float32
	for b := 0; b < n; b += 32 {
		for j := range x {
			x[j] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*(b+j):]))
		}
		var amax, signed float32
		for _, v := range x {
			if a := float32(math.Abs(float64(v))); a > amax {
				amax, signed = a, v
			}
		}
		if typ == ggmlQ8_0 {
			d := amax / 127
			var id float32
			if d != 0 {
				id = 1 / d
			}
			out = binary.LittleEndian.AppendUint16(out, f32ToF16(d))
			for _, v := range x {
				out = append(out, byte(int8(math.Round(float64(v*id)))))
			}
			continue
		}
		d := signed / -8
		var id float32
		if d != 0 {
			id = 1 / d
		}
		out = binary.LittleEndian.AppendUint16(out, f32ToF16(d))
		for j := range 16 {
			x0, x1 := x[j]*id, x[16+j]*id
			q0, q1 := min(15, int8(x0+8.5)), min(15, int8(x1+8.5))
			out = append(out, byte(q0)|byte(q1)<<4)
		}
	}
	return out
}
