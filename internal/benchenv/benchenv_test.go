package benchenv

import (
	"runtime"
	"strconv"
	"strings"
	"testing"
)

func TestInt(t *testing.T) {
	for _, tc := range []struct {
		name, value string
		want        int
	}{
		{"unset", "", 7},
		{"set", "12", 12},
		{"zero", "0", 7},
		{"negative", "-3", 7},
		{"not a number", "x", 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("LF_BENCH_TEST_KNOB", tc.value)
			if got := Int("LF_BENCH_TEST_KNOB", 7); got != tc.want {
				t.Fatalf("Int = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestMachine(t *testing.T) {
	m := Machine()
	if !strings.HasPrefix(m, "CPU "+CPU()+", GOMAXPROCS "+strconv.Itoa(runtime.GOMAXPROCS(0))+", reference sha256 ") || !strings.HasSuffix(m, " MB/s") || CPU() == "" {
		t.Fatalf("Machine() = %q", m)
	}
	if r := Reference(); r <= 0 {
		t.Fatalf("Reference() = %v", r)
	}
}

// TestPeakRSS: the peak follows a large allocation, and a reset brings it
// back below it.
func TestPeakRSS(t *testing.T) {
	if PeakRSS() == 0 {
		t.Skip("no /proc/self/status")
	}
	ResetPeakRSS()
	before := PeakRSS()
	buf := make([]byte, 64<<20)
	for i := range buf {
		buf[i] = byte(i)
	}
	during := PeakRSS()
	runtime.KeepAlive(buf)
	if during < before+60<<20 {
		t.Fatalf("peak RSS %d after touching 64 MiB, was %d", during, before)
	}
	buf = nil
	ResetPeakRSS()
	if after := PeakRSS(); after >= during {
		t.Errorf("peak RSS %d after a reset, %d before it", after, during)
	}
	if CPUSeconds() <= 0 {
		t.Error("no CPU time")
	}
}

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		vs   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{3}, 3},
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
	} {
		if got := Median(c.vs); got != c.want {
			t.Errorf("Median(%v) = %v, want %v", c.vs, got, c.want)
		}
	}
}
