package model

import (
	"context"
	"testing"

	"github.com/largeforge/largeforge/model/checkpoint"
)

// MemoryBytes counts the weights, and a decode state's KV cache while it
// lives, on both engines.
func TestMemoryBytes(t *testing.T) {
	for _, engine := range []string{EngineNative, EngineGraph} {
		t.Run(engine, func(t *testing.T) {
			dir := t.TempDir()
			if err := checkpoint.Init("tiny", 1, dir); err != nil {
				t.Fatal(err)
			}
			ck, err := checkpoint.Load(dir)
			if err != nil {
				t.Fatal(err)
			}
			m, err := New(ck, WithEngine(engine))
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			weights := m.MemoryBytes()
			params := int64(4 * 260416) // the tiny preset's parameters in float32
			if weights < params {
				t.Fatalf("%d bytes held, less than the %d bytes of the weights", weights, params)
			}
			c := m.Config()
			s := m.newKVState(4, 64)
			want := int64(4 * 2 * c.NumLayers * 4 * c.NumKVHeads * c.HeadDim * 64)
			if got := m.MemoryBytes() - weights; got != want {
				t.Errorf("a 4×64 cache adds %d bytes, want %d", got, want)
			}
			if err := s.grow(context.Background(), 128); err != nil {
				t.Fatal(err)
			}
			if got := m.MemoryBytes() - weights; got != 2*want {
				t.Errorf("grown to 128 positions: %d bytes, want %d", got, 2*want)
			}
			s.release()
			if got := m.MemoryBytes(); got != weights {
				t.Errorf("after release %d bytes, want the weights' %d", got, weights)
			}
		})
	}
}

// TestDevice: the device label follows the backend's configuration.
func TestDevice(t *testing.T) {
	for _, tc := range []struct{ backend, want string }{
		{"go", "cpu"}, {"xla:cpu", "cpu"}, {"xla:cuda", "cuda:0"}, {"xla:rocm", "rocm:0"}, {"xla", "cpu"},
	} {
		m := &Model{bname: tc.backend}
		if got := m.Device(); got != tc.want {
			t.Errorf("backend %q: device %q, want %q", tc.backend, got, tc.want)
		}
		if d := m.DeviceMemory(); len(d) != 1 || d[0].Device != tc.want {
			t.Errorf("backend %q: DeviceMemory %+v", tc.backend, d)
		}
	}
}
