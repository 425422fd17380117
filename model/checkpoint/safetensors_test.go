package checkpoint

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// rawTensor is one entry of a hand-built safetensors file.
type rawTensor struct {
	name  string
	dtype string
	shape []int
	data  []byte
}

// buildSafetensors lays out a safetensors file byte for byte so tests can
// write dtypes and defects that WriteSafetensors never produces.
func buildSafetensors(t testing.TB, tensors []rawTensor, meta map[string]string) []byte {
	t.Helper()
	header := map[string]any{}
	if meta != nil {
		header["__metadata__"] = meta
	}
	var data []byte
	for _, rt := range tensors {
		header[rt.name] = map[string]any{"dtype": rt.dtype, "shape": rt.shape, "data_offsets": []int{len(data), len(data) + len(rt.data)}}
		data = append(data, rt.data...)
	}
	hb, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(hb)))
	out = append(out, hb...)
	return append(out, data...)
}

func f32Bytes(vs ...float32) []byte {
	var b []byte
	for _, v := range vs {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
	}
	return b
}

func u16Bytes(vs ...uint16) []byte {
	var b []byte
	for _, v := range vs {
		b = binary.LittleEndian.AppendUint16(b, v)
	}
	return b
}

func writeFile(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSafetensorsRoundTrip(t *testing.T) {
	dir := t.TempDir()
	in := map[string]*Tensor{
		"b.matrix": {Shape: []int{2, 3}, Data: []float32{1, -2, 3.5, float32(math.Inf(1)), 0, 1e-30}},
		"a.vector": {Shape: []int{4}, Data: []float32{0.25, 0.5, 0.75, 1}},
		"c.scalar": {Shape: []int{}, Data: []float32{42}},
		"d.empty":  {Shape: []int{0, 3}, Data: []float32{}},
	}
	meta := map[string]string{"format": "pt", "note": "round trip"}
	path := filepath.Join(dir, "x.safetensors")
	if err := WriteSafetensors(path, in, meta); err != nil {
		t.Fatalf("WriteSafetensors: %v", err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := binary.LittleEndian.Uint64(raw)
	if (8+n)%8 != 0 {
		t.Errorf("header length %d leaves data unaligned", n)
	}
	// Tensors are laid out in name order.
	if i, j := strings.Index(string(raw[8:8+n]), `"a.vector"`), strings.Index(string(raw[8:8+n]), `"b.matrix"`); i < 0 || j < 0 || i > j {
		t.Errorf("header not sorted by name: %s", raw[8:8+n])
	}
	got, gotMeta, err := ReadSafetensors(path)
	if err != nil {
		t.Fatalf("ReadSafetensors: %v", err)
	}
	if !reflect.DeepEqual(gotMeta, meta) {
		t.Errorf("metadata = %v, want %v", gotMeta, meta)
	}
	if !reflect.DeepEqual(got, in) {
		t.Errorf("tensors differ:\n got %v\nwant %v", got, in)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("temporary files left behind: %v", entries)
	}
}

func TestSafetensorsHalfPrecision(t *testing.T) {
	// F16: 1, -2, 0.5, 65504 (max), smallest subnormal, -0, +inf.
	f16 := u16Bytes(0x3c00, 0xc000, 0x3800, 0x7bff, 0x0001, 0x8000, 0x7c00)
	f16Want := []float32{1, -2, 0.5, 65504, float32(math.Ldexp(1, -24)), float32(math.Copysign(0, -1)), float32(math.Inf(1))}
	// BF16: 1, -2, 3.140625, 1e38-ish.
	bf16 := u16Bytes(0x3f80, 0xc000, 0x4049, 0x7e96)
	bf16Want := []float32{1, -2, 3.140625, math.Float32frombits(0x7e960000)}
	file := buildSafetensors(t, []rawTensor{
		{name: "h", dtype: "F16", shape: []int{7}, data: f16},
		{name: "b", dtype: "BF16", shape: []int{2, 2}, data: bf16},
	}, nil)
	path := writeFile(t, t.TempDir(), "h.safetensors", file)
	got, _, err := ReadSafetensors(path)
	if err != nil {
		t.Fatal(err)
	}
	for i, w := range f16Want {
		if math.Float32bits(got["h"].Data[i]) != math.Float32bits(w) {
			t.Errorf("F16[%d] = %g, want %g", i, got["h"].Data[i], w)
		}
	}
	if !reflect.DeepEqual(got["b"].Data, bf16Want) || !reflect.DeepEqual(got["b"].Shape, []int{2, 2}) {
		t.Errorf("BF16 = %v %v, want %v", got["b"].Shape, got["b"].Data, bf16Want)
	}
	if nan := f16ToF32(0x7e00); !math.IsNaN(float64(nan)) {
		t.Errorf("F16 NaN = %g", nan)
	}
}

// TestF16AllValues checks every finite half against float64 arithmetic.
func TestF16AllValues(t *testing.T) {
	for h := 0; h < 1<<16; h++ {
		exp := (h >> 10) & 0x1f
		if exp == 0x1f {
			continue
		}
		mant := float64(h & 0x3ff)
		var want float64
		if exp == 0 {
			want = math.Ldexp(mant, -24)
		} else {
			want = math.Ldexp(1+mant/1024, exp-15)
		}
		if h&0x8000 != 0 {
			want = -want
		}
		if got := f16ToF32(uint16(h)); float64(got) != want {
			t.Fatalf("f16 %#04x = %g, want %g", h, got, want)
		}
	}
}

func TestReadSafetensorsErrors(t *testing.T) {
	good := buildSafetensors(t, []rawTensor{{name: "w", dtype: "F32", shape: []int{2, 2}, data: f32Bytes(1, 2, 3, 4)}}, nil)
	hugeLen := append([]byte{}, good...)
	binary.LittleEndian.PutUint64(hugeLen, 1<<40)
	tests := []struct {
		name    string
		data    []byte
		wantErr error
		naming  string // the error names this tensor
	}{
		{name: "empty file", data: nil, wantErr: ErrTruncated},
		{name: "header length beyond file", data: hugeLen, wantErr: ErrTruncated},
		{name: "truncated data", data: good[:len(good)-3], wantErr: ErrTruncated, naming: "w"},
		{name: "bad dtype", data: buildSafetensors(t, []rawTensor{{name: "ids", dtype: "I64", shape: []int{1}, data: make([]byte, 8)}}, nil), wantErr: ErrDType, naming: "ids"},
		{name: "shape does not match bytes", data: buildSafetensors(t, []rawTensor{{name: "w", dtype: "F32", shape: []int{3}, data: f32Bytes(1, 2)}}, nil), wantErr: ErrShape, naming: "w"},
		{name: "negative dim", data: buildSafetensors(t, []rawTensor{{name: "w", dtype: "F32", shape: []int{-1}, data: f32Bytes(1)}}, nil), wantErr: ErrShape, naming: "w"},
		{name: "overflowing shape", data: buildSafetensors(t, []rawTensor{{name: "w", dtype: "F32", shape: []int{1 << 40, 1 << 40}, data: f32Bytes(1)}}, nil), wantErr: ErrShape, naming: "w"},
		{name: "overlapping tensors", data: func() []byte {
			h := []byte(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`)
			return append(append(binary.LittleEndian.AppendUint64(nil, uint64(len(h))), h...), f32Bytes(1, 2, 3)...)
		}(), wantErr: ErrBadHeader, naming: "b"},
		{name: "not json", data: append(binary.LittleEndian.AppendUint64(nil, 4), []byte("nope")...), wantErr: ErrBadHeader},
		{name: "bad metadata", data: func() []byte {
			h := []byte(`{"__metadata__":{"a":1}}`)
			return append(binary.LittleEndian.AppendUint64(nil, uint64(len(h))), h...)
		}(), wantErr: ErrBadHeader},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeFile(t, t.TempDir(), "bad.safetensors", tt.data)
			_, _, err := ReadSafetensors(path)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name the file", err)
			}
			if tt.naming != "" && !strings.Contains(err.Error(), `"`+tt.naming+`"`) {
				t.Errorf("error %q does not name tensor %q", err, tt.naming)
			}
		})
	}
}

func TestWriteSafetensorsRejects(t *testing.T) {
	tests := []struct {
		name    string
		tensors map[string]*Tensor
		wantErr error
	}{
		{name: "data does not match shape", tensors: map[string]*Tensor{"w": {Shape: []int{2, 2}, Data: []float32{1}}}, wantErr: ErrShape},
		{name: "nil tensor", tensors: map[string]*Tensor{"w": nil}, wantErr: ErrShape},
		{name: "reserved name", tensors: map[string]*Tensor{"__metadata__": {Shape: []int{1}, Data: []float32{1}}}, wantErr: ErrBadHeader},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			err := WriteSafetensors(filepath.Join(dir, "x.safetensors"), tt.tensors, nil)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Errorf("files left after a failed write: %v", entries)
			}
		})
	}
}

// bytesReaderAt adapts a byte slice for the fuzz target.
type bytesReaderAt []byte

func (b bytesReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off > int64(len(b)) {
		return 0, errors.New("offset out of range")
	}
	n := copy(p, b[off:])
	if n < len(p) {
		return n, errors.New("EOF")
	}
	return n, nil
}

func FuzzReadSafetensors(f *testing.F) {
	f.Add(buildSafetensors(f, []rawTensor{{name: "w", dtype: "F32", shape: []int{2, 2}, data: f32Bytes(1, 2, 3, 4)}}, map[string]string{"format": "pt"}))
	f.Add(buildSafetensors(f, []rawTensor{{name: "h", dtype: "F16", shape: []int{2}, data: u16Bytes(0x3c00, 0x7c00)}, {name: "b", dtype: "BF16", shape: []int{1}, data: u16Bytes(0x3f80)}}, nil))
	f.Add(buildSafetensors(f, []rawTensor{{name: "s", dtype: "F32", shape: []int{}, data: f32Bytes(1)}}, nil))
	f.Add([]byte{8, 0, 0, 0, 0, 0, 0, 0, '{', '}', ' ', ' ', ' ', ' ', ' ', ' '})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Add(append(binary.LittleEndian.AppendUint64(nil, 60), []byte(`{"w":{"dtype":"F32","shape":[1000000000],"data_offsets":[0,4]}}`)...))
	f.Fuzz(func(t *testing.T, data []byte) {
		tensors, _, err := readSafetensors(bytesReaderAt(data), int64(len(data)), "fuzz")
		if err != nil {
			return
		}
		total := 0
		for name, ts := range tensors {
			if len(ts.Data) != ts.NumElements() {
				t.Fatalf("tensor %q: %d values for shape %v", name, len(ts.Data), ts.Shape)
			}
			total += len(ts.Data)
		}
		// Every value comes from at least two bytes of the input.
		if 2*total > len(data) {
			t.Fatalf("%d values decoded from %d bytes", total, len(data))
		}
	})
}
