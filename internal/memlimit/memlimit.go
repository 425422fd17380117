// Package memlimit keeps a long-running process (largeforge up) within a
// soft memory limit: the Go runtime's (debug.SetMemoryLimit), held at a
// floor while the live heap is small and raised with it when it grows, so
// that the garbage collector returns memory early (a dataset sink's
// batches and the embedded server's block caches are garbage soon) without
// running back to back when the process holds more (a model served or
// trained in it).
package memlimit

import (
	"errors"
	"fmt"
	"math"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ErrInvalid is returned for a size that does not parse.
var ErrInvalid = errors.New("invalid memory limit")

// DefaultFloor is the limit of `largeforge up` while its live heap is
// small: 256 MiB of Go memory keep its resident set (which adds the
// binary's text, about 20 MiB) within 300 MiB while it ingests.
const DefaultFloor int64 = 256 << 20

// Growth is how far above the live heap the limit is held once the floor
// is too low for it: the limit is max(floor, live × Growth), the
// collection pace of GOGC=50 for a large heap (the default, GOGC=100,
// lets the heap double).
const Growth = 1.5

// interval is how often the live heap is read.
const interval = 50 * time.Millisecond

var units = []struct {
	suffix string
	shift  uint
}{{"TiB", 40}, {"GiB", 30}, {"MiB", 20}, {"KiB", 10}, {"B", 0}}

// Parse reads a size as GOMEMLIMIT writes it (a number of bytes, or with a
// suffix B, KiB, MiB, GiB or TiB); "0" and "off" are 0: no limit.
func Parse(s string) (int64, error) {
	t := strings.TrimSpace(s)
	if t == "off" {
		return 0, nil
	}
	num, shift := t, uint(0)
	for _, u := range units {
		if rest, ok := strings.CutSuffix(t, u.suffix); ok {
			num, shift = rest, u.shift
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64>>shift {
		return 0, fmt.Errorf("%w: %q: want bytes, or a number with B, KiB, MiB, GiB or TiB (0 or off: none)", ErrInvalid, s)
	}
	return n << shift, nil
}

// UserSet reports whether the environment tunes the collector itself
// (GOMEMLIMIT or GOGC set), which Start then leaves alone.
func UserSet() bool {
	return os.Getenv("GOMEMLIMIT") != "" || os.Getenv("GOGC") != ""
}

// Start holds the soft memory limit at max(floor, live heap × Growth)
// until stop, which puts back the limit there was. It does nothing (and
// reports false) when floor is 0 or the environment sets GOMEMLIMIT or
// GOGC.
func Start(floor int64) (stop func(), active bool) {
	if floor <= 0 || UserSet() {
		return func() {}, false
	}
	prev := debug.SetMemoryLimit(floor)
	done, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		samples := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
		tick := time.NewTicker(interval)
		defer tick.Stop()
		set := floor
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			metrics.Read(samples)
			if samples[0].Value.Kind() != metrics.KindUint64 {
				continue
			}
			if want := Limit(floor, samples[0].Value.Uint64()); want != set {
				debug.SetMemoryLimit(want)
				set = want
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(done)
			<-finished
			debug.SetMemoryLimit(prev)
		})
	}, true
}

// Limit is the limit for a live heap of live bytes: max(floor, live ×
// Growth), rounded up to MiB so that it changes only when the heap does.
func Limit(floor int64, live uint64) int64 {
	want := int64(float64(live) * Growth)
	want = (want + 1<<20 - 1) &^ (1<<20 - 1)
	return max(floor, want)
}
