package infer

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/largeforge/largeforge/internal/promreg/promregtest"
	"github.com/largeforge/largeforge/model"
	"github.com/largeforge/largeforge/schemas"
)

// gpuStats stands in for an accelerator runtime's memory statistics.
type gpuStats []model.DeviceMemory

func (g gpuStats) DeviceMemory() []model.DeviceMemory { return g }

// TestMemoryCollectorDevices: gpu_memory_used_bytes has one line per device
// its sources report, summed over sources; the cpu line is always there.
func TestMemoryCollectorDevices(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := newMemoryCollector()
	reg.MustRegister(c)
	value := func(device string) float64 {
		t.Helper()
		return promregtest.Value(t, reg, schemas.MetricGPUMemoryUsedBytes, schemas.LabelDevice, device)
	}
	if v := value("cpu"); v != 0 {
		t.Errorf("nothing counted: cpu %v", v)
	}
	gpu := &gpuStats{{Device: "cuda:0", Bytes: 3 << 30}, {Device: "cuda:1", Bytes: 1 << 20}}
	cpu := &gpuStats{{Device: "cpu", Bytes: 4096}}
	also := &gpuStats{{Device: "cuda:0", Bytes: 5}}
	c.Add(gpu)
	c.Add(cpu)
	c.Add(cpu) // served twice, counted once
	c.Add(also)
	for device, want := range map[string]float64{"cpu": 4096, "cuda:0": 3<<30 + 5, "cuda:1": 1 << 20} {
		if v := value(device); v != want {
			t.Errorf("device %s: %v, want %v", device, v, want)
		}
	}
	c.Remove(gpu)
	if v := value("cuda:0"); v != 5 {
		t.Errorf("after removing a source: cuda:0 %v, want 5", v)
	}
}
