package checkpoint

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"strings"
)

// QuantizeGGUF writes the GGUF file src to dst with every F32 matrix whose
// rows are whole blocks of 32 quantized by ggml's reference quantizers:
// Q8_0 for bits 8, Q4_0 for bits 4 (groupSize 0 or 32); the other tensors
// and the metadata are copied byte for byte. llama.cpp loads the result.
func QuantizeGGUF(src, dst string, bits, groupSize int) error {
	switch {
	case bits == 4 && (groupSize == 0 || groupSize == 32):
		return QuantizeGGUFType(src, dst, "q4_0")
	case bits == 8 && groupSize == 0:
		return QuantizeGGUFType(src, dst, "q8_0")
	}
	return fmt.Errorf("quantize gguf %s: %w: %d bits, group size %d (GGUF blocks: 8 bits per channel as Q8_0, or 4 bits in groups of 32 as Q4_0)", src, ErrQuant, bits, groupSize)
}

// GGUFQuantTypes are the names QuantizeGGUFType takes.
var GGUFQuantTypes = []string{"q8_0", "q4_0", "q4_k", "q6_k", "q4_k_m"}

// QuantizeGGUFType is QuantizeGGUF by llama.cpp's type name: q8_0, q4_0
// (blocks of 32), q4_k, q6_k (super-blocks of 256, ggml's reference K-quant
// quantizers, gguf_kquant_write.go), or q4_k_m, a mix in the manner of
// llama-quantize's Q4_K_M: Q6_K for attn_v, ffn_down and the output (the
// embedding when the head is tied to it), Q4_K for the other matrices. A
// matrix whose rows are not whole blocks of its type stays F32.
func QuantizeGGUFType(src, dst, name string) error {
	pick, ok := map[string]func(string) uint32{
		"q8_0":   func(string) uint32 { return ggmlQ8_0 },
		"q4_0":   func(string) uint32 { return ggmlQ4_0 },
		"q4_k":   func(string) uint32 { return ggmlQ4_K },
		"q6_k":   func(string) uint32 { return ggmlQ6_K },
		"q4_k_m": nil, // set below: it depends on the file's tensors
	}[name]
	if !ok {
		return fmt.Errorf("quantize gguf %s: %w: type %q (want one of %v)", src, ErrQuant, name, GGUFQuantTypes)
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
	if pick == nil {
		tied := true
		for _, ti := range f.Tensors {
			tied = tied && ti.Name != "output.weight"
		}
		pick = func(tensor string) uint32 {
			for _, suffix := range []string{"attn_v.weight", "ffn_down.weight", "output.weight"} {
				if strings.HasSuffix(tensor, suffix) {
					return ggmlQ6_K
				}
			}
			if tied && tensor == "token_embd.weight" {
				return ggmlQ6_K
			}
			return ggmlQ4_K
		}
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
		typ := pick(ti.Name)
		if elems, _, _ := ggmlBlock(typ); ti.Type == ggmlF32 && len(ti.Dims) == 2 && ti.Dims[0]%uint64(elems) == 0 {
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
// arithmetic, the same rounding), or super-blocks of 256 as Q4_K or Q6_K.
func ggmlQuantizeRows(raw []byte, typ uint32) []byte {
	n := len(raw) / 4
	var out []byte
	if typ == ggmlQ4_K || typ == ggmlQ6_K {
		x := make([]float32, kBlock)
		for b := 0; b < n; b += kBlock {
			for j := range x {
				x[j] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*(b+j):]))
			}
			if typ == ggmlQ4_K {
				out = quantizeQ4KBlock(out, x)
			} else {
				out = quantizeQ6KBlock(out, x)
			}
		}
		return out
	}
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
