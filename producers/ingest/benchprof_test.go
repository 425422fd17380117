package ingest_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"
)

// peakProfileDir (LF_BENCH_PROFILE, a directory) makes BenchmarkIngestAlpaca
// watch its server + sink process during the bus phase and, each time its
// resident set grows past the last peak by 8 MiB, write there what it is
// made of at that moment: heap.pprof (the live heap at the last GC),
// smaps_rollup (the kernel's split of the resident set) and memory.txt
// (the Go runtime's memory classes). What is left at the end is the peak.
const peakProfileDir = "LF_BENCH_PROFILE"

// watchPeak starts that watch when LF_BENCH_PROFILE is set; stop ends it.
func watchPeak() (stop func()) {
	dir := os.Getenv(peakProfileDir)
	if dir == "" {
		return func() {}
	}
	done, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		var peak int64
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			if rss := residentSet(); rss > peak+8<<20 {
				peak = rss
				if err := writePeak(dir, rss); err != nil {
					fmt.Fprintf(os.Stderr, "%s: %v\n", peakProfileDir, err)
					return
				}
			}
		}
	}()
	return func() { close(done); <-finished }
}

// residentSet is this process's resident set in bytes (statm's second
// field, in pages; 0 without /proc).
func residentSet() int64 {
	data, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	fields := strings.Fields(string(data))
	if len(fields) < 2 {
		return 0
	}
	pages, _ := strconv.ParseInt(fields[1], 10, 64)
	return pages * int64(os.Getpagesize())
}

func writePeak(dir string, rss int64) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var heap bytes.Buffer
	if err := pprof.Lookup("heap").WriteTo(&heap, 0); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "heap.pprof"), heap.Bytes(), 0o644); err != nil {
		return err
	}
	smaps, _ := os.ReadFile("/proc/self/smaps_rollup")
	if err := os.WriteFile(filepath.Join(dir, "smaps_rollup"), smaps, 0o644); err != nil {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "VmRSS %.0f MiB at %s\n", float64(rss)/(1<<20), time.Now().Format(time.TimeOnly))
	var samples []metrics.Sample
	for _, d := range metrics.All() {
		if strings.HasPrefix(d.Name, "/memory/classes/") || d.Name == "/gc/heap/goal:bytes" || d.Name == "/gc/gomemlimit:bytes" {
			samples = append(samples, metrics.Sample{Name: d.Name})
		}
	}
	metrics.Read(samples)
	for _, s := range samples {
		if s.Value.Kind() == metrics.KindUint64 {
			fmt.Fprintf(&b, "%-50s %8.1f MiB\n", s.Name, float64(s.Value.Uint64())/(1<<20))
		}
	}
	return os.WriteFile(filepath.Join(dir, "memory.txt"), []byte(b.String()), 0o644)
}
