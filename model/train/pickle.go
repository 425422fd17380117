package train

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strings"
)

// TrainingArgsBinFile is the checkpoint's training arguments as a pickle
// (§4.1), beside TrainingArgsFile's JSON.
const TrainingArgsBinFile = "training_args.bin"

// Pickle opcodes of protocol 2 (Python's pickletools names).
const (
	opProto      = 0x80
	opStop       = '.'
	opMark       = '('
	opEmptyDict  = '}'
	opSetItems   = 'u'
	opEmptyList  = ']'
	opAppends    = 'e'
	opNone       = 'N'
	opNewTrue    = 0x88
	opNewFalse   = 0x89
	opBinInt     = 'J'
	opLong1      = 0x8a
	opBinFloat   = 'G'
	opBinUnicode = 'X'
)

// PickleDict encodes d as a protocol-2 pickle of a dict that Python's
// pickle.load reads back: values may be nil (None), bool, the integer
// kinds (int), float32/float64 (float), string (str), slices (list) and
// maps with string keys (dict), nested. Keys are written sorted.
func PickleDict(d map[string]any) ([]byte, error) {
	var b bytes.Buffer
	b.Write([]byte{opProto, 2})
	if err := pickleValue(&b, reflect.ValueOf(d)); err != nil {
		return nil, err
	}
	b.WriteByte(opStop)
	return b.Bytes(), nil
}

func pickleValue(b *bytes.Buffer, v reflect.Value) error {
	if !v.IsValid() {
		b.WriteByte(opNone)
		return nil
	}
	switch v.Kind() {
	case reflect.Interface, reflect.Pointer:
		if v.IsNil() {
			b.WriteByte(opNone)
			return nil
		}
		return pickleValue(b, v.Elem())
	case reflect.Bool:
		if v.Bool() {
			b.WriteByte(opNewTrue)
		} else {
			b.WriteByte(opNewFalse)
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		pickleInt(b, v.Int())
	case reflect.Uint8, reflect.Uint16, reflect.Uint32:
		pickleInt(b, int64(v.Uint()))
	case reflect.Float32, reflect.Float64:
		b.WriteByte(opBinFloat)
		_ = binary.Write(b, binary.BigEndian, math.Float64bits(v.Float()))
	case reflect.String:
		b.WriteByte(opBinUnicode)
		_ = binary.Write(b, binary.LittleEndian, uint32(len(v.String())))
		b.WriteString(v.String())
	case reflect.Slice, reflect.Array:
		b.WriteByte(opEmptyList)
		if v.Len() == 0 {
			return nil
		}
		b.WriteByte(opMark)
		for i := range v.Len() {
			if err := pickleValue(b, v.Index(i)); err != nil {
				return err
			}
		}
		b.WriteByte(opAppends)
	case reflect.Map:
		if v.Type().Key().Kind() != reflect.String {
			return fmt.Errorf("%w: pickle: map key %s is not a string", ErrInvalidOption, v.Type().Key())
		}
		b.WriteByte(opEmptyDict)
		if v.Len() == 0 {
			return nil
		}
		keys := make([]string, 0, v.Len())
		for _, k := range v.MapKeys() {
			keys = append(keys, k.String())
		}
		sort.Strings(keys)
		b.WriteByte(opMark)
		for _, k := range keys {
			if err := pickleValue(b, reflect.ValueOf(k)); err != nil {
				return err
			}
			if err := pickleValue(b, v.MapIndex(reflect.ValueOf(k).Convert(v.Type().Key()))); err != nil {
				return err
			}
		}
		b.WriteByte(opSetItems)
	default:
		return fmt.Errorf("%w: pickle: cannot encode a %s", ErrInvalidOption, v.Type())
	}
	return nil
}

// pickleInt writes BININT for a 32-bit value, else LONG1 (two's complement,
// little-endian, in as few bytes as hold it).
func pickleInt(b *bytes.Buffer, n int64) {
	if n >= math.MinInt32 && n <= math.MaxInt32 {
		b.WriteByte(opBinInt)
		_ = binary.Write(b, binary.LittleEndian, int32(n))
		return
	}
	var le [8]byte
	binary.LittleEndian.PutUint64(le[:], uint64(n))
	size := 8
	for size > 1 && ((le[size-1] == 0 && le[size-2]&0x80 == 0) || (le[size-1] == 0xff && le[size-2]&0x80 != 0)) {
		size--
	}
	b.Write([]byte{opLong1, byte(size)})
	b.Write(le[:size])
}

// trainingArgs are the checkpoint's training arguments by their JSON names:
// the TrainingConfig's fields (typed as declared: ints stay ints) and the
// run's seed and max_seq_length.
func (t *Trainer) trainingArgs() map[string]any {
	args := map[string]any{"seed": t.opts.seed, "max_seq_length": t.maxLen}
	v := reflect.ValueOf(t.cfg)
	for i := range v.NumField() {
		name, opts, _ := strings.Cut(v.Type().Field(i).Tag.Get("json"), ",")
		if name == "" || name == "-" || (strings.Contains(opts, "omitempty") && v.Field(i).IsZero()) {
			continue
		}
		args[name] = v.Field(i).Interface()
	}
	return args
}
