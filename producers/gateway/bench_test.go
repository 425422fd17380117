package gateway_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/producers/gateway"
)

const benchBody = `{"model":"stories","prompt":"Once upon a time","max_tokens":1,"temperature":0}`

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[int(p*float64(len(s)-1))]
}

func (s *stack) postBench(ctx context.Context) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.url+"/v1/completions", strings.NewReader(benchBody))
	resp, err := s.http.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// TestGatewayOverhead measures one-token completions called over the bus
// directly and through the gateway, one at a time, and logs both p50s.
func TestGatewayOverhead(t *testing.T) {
	if testing.Short() {
		t.Skip("timing test")
	}
	s := newStack(t, gateway.Config{})
	ctx := context.Background()
	const n = 200
	var direct, viaHTTP []time.Duration
	for i := range 2 * n {
		t0 := time.Now()
		if i%2 == 0 {
			if _, err := s.bus.StreamRPC(ctx, pipeline.RPCCall{Subject: pipeline.RPCSubject("stories"), Data: []byte(benchBody)}, nil, nil); err != nil {
				t.Fatal(err)
			}
			direct = append(direct, time.Since(t0))
		} else {
			if err := s.postBench(ctx); err != nil {
				t.Fatal(err)
			}
			viaHTTP = append(viaHTTP, time.Since(t0))
		}
	}
	d50, h50 := percentile(direct, 0.5), percentile(viaHTTP, 0.5)
	t.Logf("one-token completion p50: bus direct %v, through the gateway %v, added %v (p99 %v vs %v)",
		d50, h50, h50-d50, percentile(direct, 0.99), percentile(viaHTTP, 0.99))
}

// loadSeconds is how long TestLoad runs: LF_LOAD_SECONDS (1 to 60),
// default 5.
func loadSeconds(t *testing.T) time.Duration {
	t.Helper()
	v := os.Getenv("LF_LOAD_SECONDS")
	if v == "" {
		return 5 * time.Second
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 60 {
		t.Fatalf("LF_LOAD_SECONDS=%q: want 1 to 60", v)
	}
	return time.Duration(n) * time.Second
}

// memSample is the process's memory at one moment of the load test.
type memSample struct {
	heap, sys uint64 // Go heap in use after a GC; memory obtained from the OS
	rss       uint64 // resident set size (0 where /proc is absent)
}

func sampleMem() memSample {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memSample{heap: ms.HeapAlloc, sys: ms.Sys, rss: rssBytes()}
}

// rssBytes reads VmRSS from /proc/self/status; 0 when unavailable.
func rssBytes() uint64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				kb, _ := strconv.ParseUint(f[0], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}

func (m memSample) String() string {
	return fmt.Sprintf("heap %.1f MiB, rss %.1f MiB", float64(m.heap)/(1<<20), float64(m.rss)/(1<<20))
}

// TestLoad runs 64 concurrent HTTP clients of one-token completions against
// the real gateway and a real infer worker (stories260K) on loopback for
// LF_LOAD_SECONDS (default 5, at most 60), and reports p50/p99 latency,
// throughput, errors (none allowed) and memory at the start, middle and end:
// the end heap may not exceed twice the middle one plus 32 MiB.
func TestLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	const clients = 64
	dur := loadSeconds(t)
	s := newStack(t, gateway.Config{})
	s.http.Transport = &http.Transport{MaxIdleConnsPerHost: clients}
	// Warm up: compile the model's graphs before measuring.
	for range 4 {
		if err := s.postBench(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	start := sampleMem()
	ctx, cancel := context.WithTimeout(context.Background(), dur)
	defer cancel()
	var mu sync.Mutex
	var lats []time.Duration
	errs := 0
	middle := make(chan memSample, 1)
	time.AfterFunc(dur/2, func() { middle <- sampleMem() })
	t0 := time.Now()
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				t1 := time.Now()
				err := s.postBench(ctx)
				mu.Lock()
				if err != nil && ctx.Err() == nil {
					errs++
					if errs <= 5 {
						t.Log(err)
					}
				} else if err == nil {
					lats = append(lats, time.Since(t1))
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	el := time.Since(t0)
	mid := <-middle
	end := sampleMem()
	t.Logf("%d clients for %v: %d requests, %.0f req/s, p50 %v, p99 %v, errors %d",
		clients, el.Round(time.Millisecond), len(lats), float64(len(lats))/el.Seconds(),
		percentile(lats, 0.5).Round(time.Microsecond), percentile(lats, 0.99).Round(time.Microsecond), errs)
	t.Logf("memory: start %v; middle %v; end %v", start, mid, end)
	if errs > 0 || len(lats) == 0 {
		t.Errorf("%d errors, %d requests", errs, len(lats))
	}
	if end.heap > 2*mid.heap+32<<20 {
		t.Errorf("heap grew from %v (middle) to %v (end)", mid, end)
	}
}
