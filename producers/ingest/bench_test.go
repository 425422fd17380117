package ingest_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/largeforge/largeforge/consumers/datasetsink"
	"github.com/largeforge/largeforge/dataset"
	"github.com/largeforge/largeforge/internal/benchenv"
	"github.com/largeforge/largeforge/internal/memlimit"
	"github.com/largeforge/largeforge/internal/samples"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/producers/ingest"
	"github.com/largeforge/largeforge/storage"
)

// benchRows is the size of the ingestion benchmark (LF_BENCH_ROWS, default 1,000,000).
func benchRows() int { return benchenv.Int("LF_BENCH_ROWS", 1_000_000) }

// The benchmark runs the ingest side as `largeforge ingest` runs, a process
// of its own: the test binary again, with these variables set (TestMain).
const (
	childURL    = "LF_INGEST_CHILD_URL"
	childSource = "LF_INGEST_CHILD_SOURCE"
)

func TestMain(m *testing.M) {
	if url := os.Getenv(childURL); url != "" {
		os.Exit(ingestChild(url, os.Getenv(childSource)))
	}
	os.Exit(m.Run())
}

// childReport is what the ingest process prints when its run is over.
type childReport struct {
	Summary ingest.Summary `json:"summary"`
	PeakRSS int64          `json:"peak_rss"` // VmHWM, bytes
	Error   string         `json:"error,omitempty"`
}

// ingestChild ingests source into dataset bench on the bus at url, as
// `largeforge ingest --format alpaca` does, and prints a childReport.
func ingestChild(url, source string) int {
	ctx := context.Background()
	log := zerolog.New(os.Stderr).Level(zerolog.WarnLevel)
	rep := childReport{}
	bus, err := pipeline.Connect(ctx, pipeline.ConnConfig{URL: url, Name: "bench-ingest"}, log)
	if err == nil {
		defer bus.Close()
		cfg := ingest.DefaultConfig()
		cfg.Dataset, cfg.Format, cfg.Wait = "bench", "alpaca", 10*time.Minute
		var in *ingest.Ingester
		if in, err = ingest.New(bus, cfg, log); err == nil {
			rep.Summary, err = in.Ingest(ctx, source, nil)
		}
	}
	if err != nil {
		rep.Error = err.Error()
	}
	rep.PeakRSS = benchenv.PeakRSS()
	_ = json.NewEncoder(os.Stdout).Encode(rep)
	if err != nil {
		return 1
	}
	return 0
}

// runIngestProcess runs ingestChild in a process of its own and returns its
// report and CPU seconds.
func runIngestProcess(t testing.TB, url, source string) (childReport, float64) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^$") // killed when t ends
	cmd.Env = append(os.Environ(), childURL+"="+url, childSource+"="+source)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	var rep childReport
	if jerr := json.Unmarshal(out, &rep); jerr != nil || err != nil {
		t.Fatalf("ingest process: %v %v (%s): %s", err, jerr, rep.Error, out)
	}
	ps := cmd.ProcessState
	return rep, (ps.UserTime() + ps.SystemTime()).Seconds()
}

// startUp starts what `largeforge up` runs for ingestion, in this process: an
// embedded server with the topology and the dataset sink (parts in
// lf_artifacts, mirrored to dir, record ids in lf_dedupe), under up's
// default soft memory limit (memlimit.DefaultFloor, unless GOMEMLIMIT or
// GOGC is set). It returns the server's URL and a stop that ends the sink
// and the limit.
func startUp(t testing.TB, dir string) (url string, stop func()) {
	t.Helper()
	stopLimit, _ := memlimit.Start(memlimit.DefaultFloor)
	t.Cleanup(stopLimit)
	e, bus := pipelinetest.StartBus(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	objects, err := storage.OpenObjects(ctx, bus, "")
	if err != nil {
		t.Fatal(err)
	}
	local, err := storage.NewLocal(storage.Dirs{Datasets: dir})
	if err != nil {
		t.Fatal(err)
	}
	mirror, err := storage.NewMirror(objects, local)
	if err != nil {
		t.Fatal(err)
	}
	w, err := datasetsink.StartStore(ctx, bus, mirror, pipelinetest.Logger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	return e.ClientURL(), func() { cancel(); w.Wait(); stopLimit() }
}

// upLimit says which soft memory limit startUp ran the server and sink under.
func upLimit() string {
	if memlimit.UserSet() {
		return fmt.Sprintf("the environment's (GOMEMLIMIT=%q GOGC=%q)", os.Getenv("GOMEMLIMIT"), os.Getenv("GOGC"))
	}
	return fmt.Sprintf("up's default: max(%.0f MiB, %.1f x live heap)", benchenv.MiB(memlimit.DefaultFloor), memlimit.Growth)
}

// TestIngestProcess: the benchmark's ingest process (the test binary run
// again with childURL set) ingests a file into the sink of this process and
// reports its run and its own peak resident set.
func TestIngestProcess(t *testing.T) {
	const n = 2000
	dir := t.TempDir()
	src := filepath.Join(dir, "alpaca.jsonl")
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := samples.WriteLargeAlpaca(f, n, 600, 1); err != nil {
		t.Fatal(err)
	}
	f.Close()
	url, stop := startUp(t, filepath.Join(dir, "up"))
	defer stop()
	rep, cpu := runIngestProcess(t, url, src)
	if !rep.Summary.Confirmed || rep.Summary.Persisted != n {
		t.Fatalf("ingest process: %+v, want %d rows persisted", rep.Summary, n)
	}
	// Its own peak, not this process's: above the Go runtime's few MiB,
	// far below the 300 MiB target for 1M rows.
	if rep.PeakRSS < 4<<20 || rep.PeakRSS > 300<<20 || cpu <= 0 {
		t.Fatalf("ingest process peak RSS %d bytes, CPU %.2f s", rep.PeakRSS, cpu)
	}
	parts, err := dataset.ListParts(filepath.Join(dir, "up", "bench"))
	if err != nil || len(parts) == 0 {
		t.Fatalf("parts %v: %v", parts, err)
	}
}

// BenchmarkIngestAlpaca ingests 1,000,000 alpaca records of about 600 bytes from a
// JSONL file to Parquet parts through an embedded JetStream, as a user runs it:
// the ingest in a process of its own (`largeforge ingest`), the server and the
// dataset sink in this one (`largeforge up`); beside it the floor measured in
// the same run: the same decode + validate + Parquet write in one process with
// no bus. Each process's peak RSS is printed: the ingest process's target is
// 300 MiB.
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
		benchenv.ResetPeakRSS()
		t0, c0 := time.Now(), benchenv.CPUSeconds()
		floorRows, err := ingest.Floor(context.Background(), src, filepath.Join(dir, fmt.Sprintf("floor-%d", i)), 32*1200)
		if err != nil {
			b.Fatal(err)
		}
		floorSec, floorCPU := time.Since(t0).Seconds(), benchenv.CPUSeconds()-c0
		floorRSS := benchenv.PeakRSS()

		// Through the bus: server and sink here, as `up` runs them (parts in
		// lf_artifacts, mirrored to busDir, record ids in lf_dedupe).
		benchenv.ResetPeakRSS()
		busDir := filepath.Join(dir, fmt.Sprintf("bus-%d", i))
		url, stop := startUp(b, busDir)
		t1, c1 := time.Now(), benchenv.CPUSeconds()
		stopWatch := watchPeak()
		rep, ingestCPU := runIngestProcess(b, url, src)
		busSec, upCPU := time.Since(t1).Seconds(), benchenv.CPUSeconds()-c1
		stopWatch()
		upRSS := benchenv.PeakRSS()
		stop()
		if rep.Summary.Persisted != int64(n) || floorRows != int64(n) {
			b.Fatalf("persisted %d (floor %d), want %d", rep.Summary.Persisted, floorRows, n)
		}

		floorRate, busRate := float64(n)/floorSec, float64(n)/busSec
		floorParts, _ := dataset.ListParts(filepath.Join(dir, fmt.Sprintf("floor-%d", i)))
		busParts, _ := dataset.ListParts(filepath.Join(busDir, "bench"))
		busCPU := ingestCPU + upCPU
		mib := benchenv.MiB
		out := bufio.NewWriter(os.Stdout)
		fmt.Fprintf(out, "\ningestion of %d alpaca records (%.0f MB JSONL) to Parquet parts; %s\n", n, mb, benchenv.Machine())
		fmt.Fprintf(out, "  %-36s %10s %8s %15s %6s %8s\n", "", "rows/s", "MB/s", "peak RSS (MiB)", "parts", "CPU s")
		fmt.Fprintf(out, "  %-36s %10.0f %8.1f %15.0f %6d %8.1f\n", "floor (decode+validate+parquet)", floorRate, mb/floorSec, mib(floorRSS), len(floorParts), floorCPU)
		fmt.Fprintf(out, "  %-36s %10.0f %8.1f %15s %6d %8.1f\n", "through the bus (two processes)", busRate, mb/busSec, "", len(busParts), busCPU)
		fmt.Fprintf(out, "  %-36s %10s %8s %15.0f %6s %8.1f\n", "  ingest process (largeforge ingest)", "", "", mib(rep.PeakRSS), "", ingestCPU)
		fmt.Fprintf(out, "  %-36s %10s %8s %15.0f %6s %8.1f\n", "  server + sink process (as up)", "", "", mib(upRSS), "", upCPU)
		fmt.Fprintf(out, "  %-36s %s\n", "    its soft memory limit", upLimit())
		fmt.Fprintf(out, "  bus / floor = %.0f%%, CPU floor / bus = %.0f%%  (targets: >= 50%% of the floor, >= 60000 rows/s, each process's peak RSS <= 300 MiB)\n",
			100*busRate/floorRate, 100*floorCPU/busCPU)
		out.Flush()
		b.ReportMetric(busRate, "rows/s")
		b.ReportMetric(floorRate, "floor-rows/s")
		b.ReportMetric(mib(rep.PeakRSS), "ingest-peak-RSS-MiB")
		b.ReportMetric(mib(upRSS), "up-peak-RSS-MiB")
		b.ReportMetric(busCPU, "bus-CPU-s")
		b.ReportMetric(floorCPU, "floor-CPU-s")
	}
}
