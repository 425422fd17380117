package pipelinetest

import (
	"os"
	"strconv"
	"syscall"
	"time"
)

// EnvInt is the positive integer in the environment variable name, else
// def: a benchmark's size knob (LF_BENCH_...).
func EnvInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// CPUSeconds is the CPU time (user and system) the process has used. A
// benchmark whose servers run in the process (StartCluster) reports the
// work of a phase with it: other processes on a loaded machine change it
// less than the phase's wall time.
func CPUSeconds() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}
