package ingest_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/largeforge/largeforge/consumers/datasetsink"
	"github.com/largeforge/largeforge/dataset"
	"github.com/largeforge/largeforge/internal/samples"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/producers/ingest"
	"github.com/largeforge/largeforge/storage"
)

// benchRows is the size of the ingestion benchmark (LF_BENCH_ROWS, default 1,000,000).
func benchRows() int {
	if v, err := strconv.Atoi(os.Getenv("LF_BENCH_ROWS")); err == nil && v > 0 {
		return v
	}
	return 1_000_000
}

// peakRSS returns the process's peak resident set size (VmHWM) in bytes.
func peakRSS() int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			kb, _ := strconv.ParseInt(strings.Fields(line)[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// cpuSeconds is the CPU time (user and system) the process has used: the
// work of a phase, which other processes on a loaded machine change less
// than its wall time.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// resetPeakRSS makes VmHWM start again from the current RSS (Linux clear_refs 5).
func resetPeakRSS() {
	runtime.GC()
	debug.FreeOSMemory()
	_ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
}

// BenchmarkIngestAlpaca ingests 1,000,000 alpaca records of about 600 bytes from a
// JSONL file to Parquet parts through an embedded JetStream (ingest → shards → sink),
// beside the floor measured in the same run: the same decode + validate + Parquet
// write with no bus.
func BenchmarkIngestAlpaca(b *testing.B) {
	n := benchRows()
	dir := b.TempDir()
	src := filepath.Join(dir, "alpaca.jsonl")
	f, err := os.Create(src)
	if err != nil {
		b.Fatal(err)
	}
	if err := samples.WriteLargeAlpaca(f, n, 600, 1); err != nil {
		b.Fatal(err)
	}
	f.Close()
	st, _ := os.Stat(src)
	mb := float64(st.Size()) / 1e6

	for i := 0; i < b.N; i++ {
		// Floor: no bus.
		resetPeakRSS()
		t0, c0 := time.Now(), cpuSeconds()
		floorRows, err := ingest.Floor(context.Background(), src, filepath.Join(dir, fmt.Sprintf("floor-%d", i)), 32*1200)
		if err != nil {
			b.Fatal(err)
		}
		floorSec, floorCPU := time.Since(t0).Seconds(), cpuSeconds()-c0
		floorRSS := peakRSS()

		// Through the bus.
		resetPeakRSS()
		_, bus := pipelinetest.StartBus(b)
		ctx, cancel := context.WithCancel(context.Background())
		busDir := filepath.Join(dir, fmt.Sprintf("bus-%d", i))
		// As `up` runs the sink: parts in lf_artifacts, mirrored to busDir,
		// record ids in lf_dedupe.
		objects, err := storage.OpenObjects(ctx, bus, "")
		if err != nil {
			b.Fatal(err)
		}
		local, err := storage.NewLocal(storage.Dirs{Datasets: busDir})
		if err != nil {
			b.Fatal(err)
		}
		mirror, err := storage.NewMirror(objects, local)
		if err != nil {
			b.Fatal(err)
		}
		w, err := datasetsink.StartStore(ctx, bus, mirror, pipelinetest.Logger(b), nil)
		if err != nil {
			b.Fatal(err)
		}
		cfg := ingest.DefaultConfig()
		cfg.Dataset, cfg.Format, cfg.Wait = "bench", "alpaca", 10*time.Minute
		in, err := ingest.New(bus, cfg, pipelinetest.Logger(b))
		if err != nil {
			b.Fatal(err)
		}
		t1, c1 := time.Now(), cpuSeconds()
		sum, err := in.Ingest(ctx, src, nil)
		if err != nil {
			b.Fatal(err)
		}
		busSec, busCPU := time.Since(t1).Seconds(), cpuSeconds()-c1
		busRSS := peakRSS()
		cancel()
		w.Wait()
		if sum.Persisted != int64(n) || floorRows != int64(n) {
			b.Fatalf("persisted %d (floor %d), want %d", sum.Persisted, floorRows, n)
		}

		floorRate, busRate := float64(n)/floorSec, float64(n)/busSec
		floorParts, _ := dataset.ListParts(filepath.Join(dir, fmt.Sprintf("floor-%d", i)))
		busParts, _ := dataset.ListParts(filepath.Join(busDir, "bench"))
		out := bufio.NewWriter(os.Stdout)
		fmt.Fprintf(out, "\ningestion of %d alpaca records (%.0f MB JSONL) to Parquet parts, GOMAXPROCS=%d\n", n, mb, runtime.GOMAXPROCS(0))
		fmt.Fprintf(out, "  %-34s %10s %8s %14s %6s %8s\n", "", "rows/s", "MB/s", "peak RSS (MB)", "parts", "CPU s")
		fmt.Fprintf(out, "  %-34s %10.0f %8.1f %14.0f %6d %8.1f\n", "floor (decode+validate+parquet)", floorRate, mb/floorSec, float64(floorRSS)/1e6, len(floorParts), floorCPU)
		fmt.Fprintf(out, "  %-34s %10.0f %8.1f %14.0f %6d %8.1f\n", "through the bus (ingest+sink)", busRate, mb/busSec, float64(busRSS)/1e6, len(busParts), busCPU)
		fmt.Fprintf(out, "  bus / floor = %.0f%%, CPU floor / bus = %.0f%%  (targets: >= 50%% of the floor, >= 60000 rows/s, peak RSS < 500 MB)\n",
			100*busRate/floorRate, 100*floorCPU/busCPU)
		out.Flush()
		b.ReportMetric(busRate, "rows/s")
		b.ReportMetric(floorRate, "floor-rows/s")
		b.ReportMetric(float64(busRSS)/1e6, "peak-RSS-MB")
		b.ReportMetric(busCPU, "bus-CPU-s")
		b.ReportMetric(floorCPU, "floor-CPU-s")
	}
}
