package model

import (
	"strings"
	"sync/atomic"
)

// DeviceCPU is the device of the native engine and the pure Go backend.
const DeviceCPU = "cpu"

// DeviceMemory is the memory in use on one device.
type DeviceMemory struct {
	Device string // "cpu", or the accelerator's platform and index ("cuda:0")
	Bytes  int64
}

// MemorySource reports the memory in use per device: a Model does, and so
// may an accelerator runtime's own statistics. The workers export what their
// sources report as gpu_memory_used_bytes{device}.
type MemorySource interface {
	DeviceMemory() []DeviceMemory
}

// Device is where the model's weights live: "cpu" for the native engine
// and the pure Go backend, else the platform of the XLA backend's
// configuration ("xla:cuda" → "cuda:0"; one device per model).
func (m *Model) Device() string {
	kind, platform, _ := strings.Cut(m.bname, ":")
	if kind != "xla" || platform == "" || platform == DeviceCPU {
		return DeviceCPU
	}
	return platform + ":0"
}

// DeviceMemory reports MemoryBytes on the model's Device.
func (m *Model) DeviceMemory() []DeviceMemory {
	return []DeviceMemory{{Device: m.Device(), Bytes: m.MemoryBytes()}}
}

// MemoryBytes is the memory the model holds on its device (the CPU for the
// native engine and the pure Go backend): its weights on the backend, the
// native engine's packed copy of them, and the KV caches of the decode
// states alive now (batchers, generations). It is what the workers export
// as gpu_memory_used_bytes{device} (see Device).
func (m *Model) MemoryBytes() int64 {
	var n int64
	m.mu.Lock()
	weights := m.weights // made late for a quantized model (graphWeights)
	m.mu.Unlock()
	for _, t := range weights {
		if t != nil {
			n += int64(t.Shape().Memory())
		}
	}
	if m.native != nil {
		n += m.native.bytes()
	}
	return n + m.cacheBytes.Load()
}

// cacheCounter counts the bytes of live KV caches; see MemoryBytes.
type cacheCounter struct{ atomic.Int64 }

// bytes is the size of the native engine's packed weights and tables.
func (d *nativeDecoder) bytes() int64 {
	n := len(d.embed) + len(d.finalNorm) + len(d.cos) + len(d.sin) + packedLen(d.lmHead)
	for _, l := range d.layers {
		n += len(l.attnNorm) + len(l.mlpNorm) + len(l.qkvBias) + len(l.oBias)
		n += packedLen(l.qkv) + packedLen(l.o) + packedLen(l.gateUp) + packedLen(l.down)
	}
	return 4*int64(n) + d.quantBytes()
}

func packedLen(p *packedMatrix) int {
	if p == nil {
		return 0
	}
	return len(p.wt)
}
