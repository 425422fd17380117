package modelstore_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/largeforge/largeforge/internal/benchenv"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/storage/modelstore"
)

// benchBytes is the model size of BenchmarkPushPull: LF_BENCH_MODEL_MB
// (default 256).
func benchBytes(*testing.B) int64 { return int64(benchenv.Int("LF_BENCH_MODEL_MB", 256)) << 20 }

// BenchmarkPushPull pushes and pulls a model of one large weights file and
// two small ones, and puts and gets the same weights as one raw object of
// lf_models, reporting MB/s of each and push/put, pull/get ratios (the
// target is 0.8 or more), and the peak RSS of a push and of a pull (the
// target for a 1 GiB model, LF_BENCH_MODEL_MB=1024: under 200 MiB).
func BenchmarkPushPull(b *testing.B) {
	benchenv.Log(b)
	size := benchBytes(b)
	dir := b.TempDir()
	weights := filepath.Join(dir, "model.safetensors")
	f, err := os.Create(weights)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.CopyN(f, rand.Reader, size); err != nil {
		b.Fatal(err)
	}
	f.Close()
	for _, n := range []string{"config.json", "tokenizer.json"} {
		if err := os.WriteFile(filepath.Join(dir, n), bytes.Repeat([]byte("{}"), 1000), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	e, bus := pipelinetest.StartBus(b)
	url := e.ClientURL()
	ctx := context.Background()
	ms, err := modelstore.New(ctx, bus)
	if err != nil {
		b.Fatal(err)
	}
	objs, err := bus.Objects(ctx, pipeline.BucketModels)
	if err != nil {
		b.Fatal(err)
	}
	mbps := func(d time.Duration) float64 { return float64(size) / (1 << 20) / d.Seconds() }
	var put, get, push, pull time.Duration
	var rss struct{ put, get, push, pull int64 } // peak RSS of each phase, MiB
	cpu := map[*time.Duration]float64{}          // CPU seconds of each phase
	// timed runs f and adds its time to d, its CPU seconds to cpu[d] and
	// its peak RSS to peak (the whole process: the embedded server's
	// included). On a shared machine the CPU seconds vary less than the
	// time.
	timed := func(d *time.Duration, peak *int64, f func() error) {
		benchenv.ResetPeakRSS()
		c0, t0 := benchenv.CPUSeconds(), time.Now()
		if err := f(); err != nil {
			b.Fatal(err)
		}
		*d += time.Since(t0)
		cpu[d] += benchenv.CPUSeconds() - c0
		*peak = max(*peak, benchenv.PeakRSS()>>20)
	}
	raw := func(i int) {
		key := "raw/" + strconv.Itoa(i)
		timed(&put, &rss.put, func() error {
			r, err := os.Open(weights)
			if err != nil {
				return err
			}
			defer r.Close()
			_, err = objs.Put(ctx, key, r)
			return err
		})
		timed(&get, &rss.get, func() error {
			or, err := objs.Get(ctx, key)
			if err != nil {
				return err
			}
			defer or.Close()
			out, err := os.Create(filepath.Join(b.TempDir(), "raw"))
			if err != nil {
				return err
			}
			defer out.Close()
			_, err = io.Copy(out, or)
			return err
		})
		// Push and put each start from an empty stream.
		if err := objs.Delete(ctx, key); err != nil {
			b.Fatal(err)
		}
	}
	model := func(i int) {
		// A distinct version each time: the same files would skip the upload.
		if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(strconv.Itoa(i)), 0o644); err != nil {
			b.Fatal(err)
		}
		timed(&push, &rss.push, func() error { _, err := ms.Push(ctx, "bench", dir); return err })
		timed(&pull, &rss.pull, func() error { _, err := ms.Pull(ctx, "bench", filepath.Join(b.TempDir(), "pulled")); return err })
		if _, _, err := ms.Remove(ctx, "bench"); err != nil {
			b.Fatal(err)
		}
	}
	for i := 0; i < b.N; i++ {
		// Alternate which goes first, so neither always meets the stream
		// the other just emptied.
		if i%2 == 0 {
			raw(i)
			model(i)
		} else {
			model(i)
			raw(i)
		}
	}
	n := time.Duration(b.N)
	b.ReportMetric(mbps(push/n), "push_MB/s")
	b.ReportMetric(mbps(put/n), "put_MB/s")
	b.ReportMetric(mbps(pull/n), "pull_MB/s")
	b.ReportMetric(mbps(get/n), "get_MB/s")
	b.ReportMetric(put.Seconds()/push.Seconds(), "push/put")
	b.ReportMetric(get.Seconds()/pull.Seconds(), "pull/get")
	b.ReportMetric(cpu[&put]/cpu[&push], "push/put_cpu")
	b.ReportMetric(cpu[&get]/cpu[&pull], "pull/get_cpu")
	b.ReportMetric(float64(rss.push), "push_peak_RSS_MiB")
	b.ReportMetric(float64(rss.pull), "pull_peak_RSS_MiB")
	// The client alone, as `largeforge model push/pull` runs it: a
	// process of its own beside this one's server.
	cpush := runChild(b, "push", url, dir)
	cpull := runChild(b, "pull", url, filepath.Join(b.TempDir(), "child"))
	b.ReportMetric(float64(cpush.PeakRSS>>20), "client_push_peak_RSS_MiB")
	b.ReportMetric(float64(cpull.PeakRSS>>20), "client_pull_peak_RSS_MiB")
	b.Logf("%d MiB as a process of its own: push %.0f MB/s at peak RSS %d MiB, pull %.0f MB/s at peak RSS %d MiB",
		size>>20, mbps(cpush.Took), cpush.PeakRSS>>20, mbps(cpull.Took), cpull.PeakRSS>>20)
	b.Logf("%d MiB, %d runs: push %.0f MB/s (raw put %.0f), pull %.0f MB/s (raw get %.0f); CPU seconds (bus included) push %.2f (put %.2f), pull %.2f (get %.2f); peak RSS of the process (bus included) push %d MiB (put %d), pull %d MiB (get %d)",
		size>>20, b.N, mbps(push/n), mbps(put/n), mbps(pull/n), mbps(get/n), cpu[&push]/float64(b.N), cpu[&put]/float64(b.N), cpu[&pull]/float64(b.N), cpu[&get]/float64(b.N),
		rss.push, rss.put, rss.pull, rss.get)
}

// The benchmark runs one push and one pull more as the command line runs
// them, in a process of its own (the test binary again, with these
// variables set: TestMain), to measure the client's own peak RSS.
const (
	childURL = "LF_MODELSTORE_CHILD_URL"
	childOp  = "LF_MODELSTORE_CHILD_OP" // push or pull
	childDir = "LF_MODELSTORE_CHILD_DIR"
)

func TestMain(m *testing.M) {
	if url := os.Getenv(childURL); url != "" {
		os.Exit(child(url, os.Getenv(childOp), os.Getenv(childDir)))
	}
	os.Exit(m.Run())
}

// childReport is what the child process prints.
type childReport struct {
	Took    time.Duration `json:"took"`
	PeakRSS int64         `json:"peak_rss"` // VmHWM, bytes
	Error   string        `json:"error,omitempty"`
}

// child pushes dir as model bench, or pulls bench into dir, on the bus at
// url and prints a childReport.
func child(url, op, dir string) int {
	ctx := context.Background()
	var rep childReport
	bus, err := pipeline.Connect(ctx, pipeline.ConnConfig{URL: url, Name: "bench-" + op}, zerolog.Nop())
	if err == nil {
		defer bus.Close()
		var ms *modelstore.Store
		if ms, err = modelstore.New(ctx, bus); err == nil {
			t0 := time.Now()
			switch op {
			case "push":
				_, err = ms.Push(ctx, "bench", dir)
			case "pull":
				_, err = ms.Pull(ctx, "bench", dir)
			default:
				err = fmt.Errorf("child op %q", op)
			}
			rep.Took = time.Since(t0)
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

// runChild runs child in a process of its own and returns its report.
func runChild(b *testing.B, op, url, dir string) childReport {
	b.Helper()
	cmd := exec.CommandContext(b.Context(), os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childURL+"="+url, childOp+"="+op, childDir+"="+dir)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	var rep childReport
	if jerr := json.Unmarshal(out, &rep); jerr != nil || err != nil {
		b.Fatalf("%s process: %v %v (%s): %s", op, err, jerr, rep.Error, out)
	}
	return rep
}
