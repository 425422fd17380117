package gateway_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"sort"
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

// TestLoad runs 64 concurrent HTTP clients for a few seconds and checks that
// none fails and memory stays bounded.
func TestLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	s := newStack(t, gateway.Config{})
	s.http.Transport = &http.Transport{MaxIdleConnsPerHost: 64}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var mu sync.Mutex
	var lats []time.Duration
	errs := 0
	var ms0, ms1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms0)
	start := time.Now()
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				t0 := time.Now()
				err := s.postBench(ctx)
				mu.Lock()
				if err != nil && ctx.Err() == nil {
					errs++
					t.Log(err)
				} else if err == nil {
					lats = append(lats, time.Since(t0))
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	runtime.GC()
	runtime.ReadMemStats(&ms1)
	t.Logf("64 clients for %v: %d requests, %.0f req/s, p50 %v, p99 %v, errors %d, heap %d → %d KiB",
		el.Round(time.Millisecond), len(lats), float64(len(lats))/el.Seconds(), percentile(lats, 0.5), percentile(lats, 0.99), errs, ms0.HeapAlloc>>10, ms1.HeapAlloc>>10)
	if errs > 0 || len(lats) == 0 {
		t.Errorf("%d errors, %d requests", errs, len(lats))
	}
	if ms1.HeapAlloc > ms0.HeapAlloc+256<<20 {
		t.Errorf("heap grew from %d to %d bytes", ms0.HeapAlloc, ms1.HeapAlloc)
	}
}
