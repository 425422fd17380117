package infer_test

import (
	"fmt"
	"testing"

	"github.com/largeforge/largeforge/internal/benchenv"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

// BenchmarkClusterJobThroughput runs BenchmarkJobThroughput's job through
// the bus (submit → LF_REQUESTS → infer worker → LF_RESULTS → results sink
// → completed job) on a three-node loopback cluster, once with the topology
// at three replicas and once at one, each on a fresh cluster, and reports
// both throughputs, their ratio (r3_vs_r1), and the process CPU seconds of
// each timed job (the three servers, the worker and the sink run in the
// process; benchJob measures them, its warm-up job left out) and their ratio
// (r3_vs_r1_CPU). The
// job has LF_BENCH_CLUSTER_REQUESTS requests (default 10000, the issue's
// figure).
func BenchmarkClusterJobThroughput(b *testing.B) {
	benchenv.Log(b)
	n := pipelinetest.EnvInt("LF_BENCH_CLUSTER_REQUESTS", 10000)
	stories(b) // loaded once, outside the timed phases
	for range b.N {
		fig := benchenv.Figures{}
		r3 := benchClusterJob(b, 3, n, fig)
		r1 := benchClusterJob(b, 1, n, fig)
		fig.Report(b)
		if r3.tokens != r1.tokens {
			b.Errorf("tokens: three replicas %d, one %d (the same greedy generations)", r3.tokens, r1.tokens)
		}
		b.ReportMetric(float64(n)/r3.wall.Seconds(), "r3_req/s")
		b.ReportMetric(float64(n)/r1.wall.Seconds(), "r1_req/s")
		b.ReportMetric(float64(r3.tokens)/r3.wall.Seconds(), "r3_tok/s")
		b.ReportMetric(float64(r1.tokens)/r1.wall.Seconds(), "r1_tok/s")
		b.ReportMetric(r1.wall.Seconds()/r3.wall.Seconds(), "r3_vs_r1")
		b.ReportMetric(r1.cpu/r3.cpu, "r3_vs_r1_CPU")
		b.ReportMetric(r3.cpu, "r3_CPU-s")
		b.ReportMetric(r1.cpu, "r1_CPU-s")
	}
}

// benchClusterJob runs an n-request job (benchJob) on a fresh three-node
// cluster whose topology has the given replica count, and shuts the
// cluster down.
func benchClusterJob(b *testing.B, replicas, n int, fig benchenv.Figures) phaseResult {
	b.Helper()
	_, bus, stopCluster := pipelinetest.StartClusterBus(b, 3, replicas)
	defer stopCluster()
	s := newStackOn(b, bus)
	defer s.stopSink()
	return benchJob(b, s, n, fmt.Sprintf("r%d_", replicas), fig)
}
