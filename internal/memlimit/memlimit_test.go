package memlimit

import (
	"errors"
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		err  bool
	}{
		{"256MiB", 256 << 20, false},
		{"1GiB", 1 << 30, false},
		{"300", 300, false},
		{"512 KiB", 512 << 10, false},
		{"4096B", 4096, false},
		{"0", 0, false},
		{"off", 0, false},
		{"", 0, true},
		{"256MB", 0, true}, // GOMEMLIMIT's units are binary
		{"-1MiB", 0, true},
		{"lots", 0, true},
		{"99999999TiB", 0, true},
	} {
		got, err := Parse(tc.in)
		if tc.err {
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("Parse(%q) = %d, %v; want ErrInvalid", tc.in, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("Parse(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
}

func TestLimit(t *testing.T) {
	for _, tc := range []struct {
		floor int64
		live  uint64
		want  int64
	}{
		{256 << 20, 100 << 20, 256 << 20}, // small heap: the floor
		{256 << 20, 1 << 30, 1536 << 20},  // large heap: 1.5 × live
		{256 << 20, 200<<20 + 1, 301 << 20},
	} {
		if got := Limit(tc.floor, tc.live); got != tc.want {
			t.Errorf("Limit(%d, %d) = %d, want %d", tc.floor, tc.live, got, tc.want)
		}
	}
}

// TestStartFollowsHeap: Start sets the floor, raises the limit when the
// live heap outgrows it, and stop puts the earlier limit back; the user's
// GOGC or GOMEMLIMIT turns it off.
func TestStartFollowsHeap(t *testing.T) {
	t.Setenv("GOMEMLIMIT", "")
	t.Setenv("GOGC", "")
	before := debug.SetMemoryLimit(-1)
	const floor = 8 << 20
	stop, active := Start(floor)
	if !active {
		t.Fatal("Start was not active")
	}
	if got := debug.SetMemoryLimit(-1); got != floor {
		t.Fatalf("limit %d after Start, want the floor %d", got, floor)
	}
	held := make([]byte, 64<<20) // live: the limit must follow it
	for i := range held {
		held[i] = byte(i)
	}
	deadline := time.Now().Add(20 * time.Second)
	for debug.SetMemoryLimit(-1) < 96<<20 {
		if time.Now().After(deadline) {
			t.Fatalf("limit %d with 64 MiB live, want at least 96 MiB", debug.SetMemoryLimit(-1))
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond) // a poll, not a speed: the deadline bounds it
	}
	runtime.KeepAlive(held)
	stop()
	if got := debug.SetMemoryLimit(-1); got != before {
		t.Fatalf("limit %d after stop, want %d back", got, before)
	}

	t.Setenv("GOGC", "200")
	if _, active := Start(floor); active {
		t.Fatal("Start overrode GOGC")
	}
	t.Setenv("GOGC", "")
	if _, active := Start(0); active {
		t.Fatal("Start(0) was active")
	}
}
