package modelstore_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/largeforge/largeforge/internal/benchenv"
	"github.com/largeforge/largeforge/storage/modelstore"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

// benchBytes is the model size of BenchmarkPushPull: LF_BENCH_MODEL_MB
// (default 256).
func benchBytes(*testing.B) int64 { return int64(benchenv.Int("LF_BENCH_MODEL_MB", 256)) << 20 }

// BenchmarkPushPull pushes and pulls a model of one large weights file and
// two small ones, and puts and gets the same weights as one raw object of
// lf_models, reporting MB/s of each and push/put, pull/get ratios (the
// target is 0.8 or more).
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
	_, bus := pipelinetest.StartBus(b)
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
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		r, _ := os.Open(weights)
		if _, err := objs.Put(ctx, "raw/"+strconv.Itoa(i), r); err != nil {
			b.Fatal(err)
		}
		r.Close()
		t1 := time.Now()
		or, err := objs.Get(ctx, "raw/"+strconv.Itoa(i))
		if err != nil {
			b.Fatal(err)
		}
		out, _ := os.Create(filepath.Join(b.TempDir(), "raw"))
		if _, err := io.Copy(out, or); err != nil {
			b.Fatal(err)
		}
		out.Close()
		or.Close()
		t2 := time.Now()
		// Push and put each start from an empty stream.
		if err := objs.Delete(ctx, "raw/"+strconv.Itoa(i)); err != nil {
			b.Fatal(err)
		}
		// A distinct version each time: the same files would skip the upload.
		if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(strconv.Itoa(i)), 0o644); err != nil {
			b.Fatal(err)
		}
		t3 := time.Now()
		if _, err := ms.Push(ctx, "bench", dir); err != nil {
			b.Fatal(err)
		}
		t4 := time.Now()
		if _, err := ms.Pull(ctx, "bench", filepath.Join(b.TempDir(), "pulled")); err != nil {
			b.Fatal(err)
		}
		t5 := time.Now()
		if _, _, err := ms.Remove(ctx, "bench"); err != nil {
			b.Fatal(err)
		}
		put, get, push, pull = put+t1.Sub(t0), get+t2.Sub(t1), push+t4.Sub(t3), pull+t5.Sub(t4)
	}
	n := time.Duration(b.N)
	b.ReportMetric(mbps(push/n), "push_MB/s")
	b.ReportMetric(mbps(put/n), "put_MB/s")
	b.ReportMetric(mbps(pull/n), "pull_MB/s")
	b.ReportMetric(mbps(get/n), "get_MB/s")
	b.ReportMetric(put.Seconds()/push.Seconds(), "push/put")
	b.ReportMetric(get.Seconds()/pull.Seconds(), "pull/get")
	b.Logf("%d MiB: push %.0f MB/s (raw put %.0f), pull %.0f MB/s (raw get %.0f)", size>>20, mbps(push/n), mbps(put/n), mbps(pull/n), mbps(get/n))
}
