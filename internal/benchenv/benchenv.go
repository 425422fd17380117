// Package benchenv is what every benchmark of `make bench` shares: the
// machine line printed beside each figure (CPU model and GOMAXPROCS), the
// process's peak resident set and CPU time, and the LF_BENCH_* size knobs
// that shorten a run.
package benchenv

import (
	"crypto/sha256"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Prefix starts the name of every environment variable that sizes a
// benchmark (LF_BENCH_ROWS, LF_BENCH_SCORE_ROWS, ...).
const Prefix = "LF_BENCH_"

// Int is the positive integer in the environment variable name (one of
// Prefix's), else def.
func Int(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

var cpuOnce = sync.OnceValue(func() string {
	data, err := os.ReadFile("/proc/cpuinfo")
	if err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				return strings.TrimSpace(v)
			}
		}
	}
	return "unknown " + runtime.GOARCH + " CPU"
})

// CPU is the machine's CPU model (/proc/cpuinfo's first model name), or
// "unknown <arch> CPU" where there is none.
func CPU() string { return cpuOnce() }

// Machine is the line every figure is printed with: "CPU <model>,
// GOMAXPROCS <n>, reference sha256 <r> MB/s", the threads the Go side runs
// on and the machine's single-thread rate measured now (Reference): the
// baseline of a figure that has none of its own, which tells how much
// other work slowed the machine when the figure was taken.
func Machine() string {
	return fmt.Sprintf("CPU %s, GOMAXPROCS %d, reference sha256 %.0f MB/s", CPU(), runtime.GOMAXPROCS(0), Reference())
}

// referenceBytes is what Reference hashes (about 20-40 ms on a 2020s core).
var referenceBytes = make([]byte, 8<<20)

// Reference is the machine's single-thread rate now: the best of three
// sha256 sums of 8 MiB, in MB/s.
func Reference() float64 {
	best := time.Duration(1<<63 - 1)
	for range 3 {
		t0 := time.Now()
		sha256.Sum256(referenceBytes)
		best = min(best, time.Since(t0))
	}
	return float64(len(referenceBytes)) / 1e6 / best.Seconds()
}

// logged holds the GOMAXPROCS values whose Machine line Log printed.
var logged sync.Map

// Log prints Machine to standard output, once per process and GOMAXPROCS
// value, before the benchmark's figures: for a benchmark whose figures are
// ReportMetric's alone (or come from sub-benchmarks, whose parent's b.Log
// go test drops), the line that says where they were measured.
func Log(b testing.TB) {
	b.Helper()
	if _, done := logged.LoadOrStore(runtime.GOMAXPROCS(0), true); !done {
		fmt.Println("machine: " + Machine())
	}
}

// PeakRSS is the process's peak resident set (VmHWM) in bytes since it
// started or since ResetPeakRSS; 0 where /proc is missing.
func PeakRSS() int64 { return PeakRSSOf("self") }

// PeakRSSOf is the peak resident set in bytes of process pid ("self" or a
// number), 0 when it cannot be read.
func PeakRSSOf(pid string) int64 {
	data, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// MiB is n bytes in MiB.
func MiB(n int64) float64 { return float64(n) / (1 << 20) }

// ResetPeakRSS collects garbage, returns the freed memory to the system
// and makes VmHWM start again from the current resident set (Linux
// clear_refs 5), so that PeakRSS measures the phase that follows.
func ResetPeakRSS() {
	runtime.GC()
	debug.FreeOSMemory()
	_ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
}

// CPUSeconds is the CPU time (user and system) the process has used: the
// work of a phase, which other processes on a loaded machine change less
// than its wall time.
func CPUSeconds() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// Figures are a benchmark's figures over its rounds, by unit; Report
// prints the median of each: on a shared machine one round moves by tens
// of percent with the load.
type Figures map[string][]float64

// Add records one round's value of unit.
func (f Figures) Add(unit string, v float64) { f[unit] = append(f[unit], v) }

// Report reports the median of each unit's values.
func (f Figures) Report(b *testing.B) {
	for unit, vs := range f {
		b.ReportMetric(Median(vs), unit)
	}
}

// Median is the middle of vs (the mean of the two middle ones when even;
// 0 for none).
func Median(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(vs))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
