# LargeForge developer entry points. CI runs `make test` (through .ci/run).
GO      ?= go
BIN     := bin/largeforge
RUN_DIR ?= .run
FUZZTIME ?= 30s
FUZZ    ?= .

.PHONY: all build install run test test-short bench lint tidy clean fuzz chaos

all: build

build:
	$(GO) build -o $(BIN) ./cmd/largeforge

# largeforge into $(go env GOBIN), else $(go env GOPATH)/bin: put that on your PATH.
install:
	$(GO) install ./cmd/largeforge

# The main job end to end on the embedded default, in a fresh data directory.
run: build
	RUN_DIR=$(RUN_DIR) BIN=$(BIN) bash scripts/run.sh

# The packages, then the chaos test's short form on its own (it kills
# processes of a three-node cluster under load; run beside the other
# packages it would share the two cores with them as well).
test:
	$(GO) test -count=1 -timeout 20m ./...
	LF_CHAOS=short $(GO) test -count=1 -timeout 15m -run '^TestChaos$$' ./cmd/largeforge/

test-short:
	$(GO) test -short -count=1 ./...

# Benchmarks print each figure beside its same-run baseline (the floor without the bus,
# the kernels' or backend's 1024^3 matmul rate, PyTorch's figure where python3-torch is
# installed, the in-process run, a raw put/get, one replica against three) and the machine
# line (CPU model, GOMAXPROCS, a reference rate; internal/benchenv). 677 s on the quiet
# 2-core machine (BenchmarkScore 208 s of it, the model package 379 s, the job and echo
# benchmarks' rounds included); the LF_BENCH_* variables shrink it:
# LF_BENCH_ROWS (ingest, 1000000), LF_BENCH_SCORE_ROWS (10000), LF_BENCH_PREFILL_REPS (5),
# LF_BENCH_PEER_STEPS (3), LF_BENCH_REQUESTS (10000), LF_BENCH_JOB_ROUNDS (5), LF_BENCH_JOB_RTT (2ms; 0: no such phase),
# LF_BENCH_CLUSTER_REQUESTS (10000), LF_BENCH_ECHO_MSGS (20000), LF_BENCH_ECHO_ROUNDS (3),
# LF_BENCH_ASSEMBLY_ROWS (100000), LF_BENCH_MODEL_MB (256), LF_BENCH_LIST_OBJECTS (20000), LF_BENCH_JOBS (2000). The last line is the run's total time.
BENCH_PKGS := ./producers/ingest/ ./model/... ./jobs/ ./consumers/infer/ ./producers/submit/ ./storage/ ./storage/modelstore/ ./consumers/resultsink/ ./producers/gateway/

bench:
	@start=$$(date +%s); \
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 30m $(BENCH_PKGS) && \
	$(GO) test -run '^$$' -bench 'Cluster' -benchtime 1x -timeout 30m ./pipeline/; \
	rc=$$?; echo "make bench: $$(( $$(date +%s) - start )) s in all, exit status $$rc"; exit $$rc

# Every Go fuzz target for FUZZTIME each (default 30s; FUZZ=regexp narrows
# them); `make test` runs only their seeds (testdata/fuzz and f.Add).
fuzz:
	GO=$(GO) FUZZTIME=$(FUZZTIME) FUZZ='$(FUZZ)' bash scripts/fuzz.sh

# The chaos test's long form (processes SIGKILLed and restarted under a mixed
# workload; LF_CHAOS_SEED=N replays a run); `make test` runs the short form
# after the packages.
chaos:
	LF_CHAOS=long $(GO) test -count=1 -timeout 30m -run '^TestChaos$$' -v ./cmd/largeforge/

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet ./...
	@if command -v staticcheck >/dev/null 2>&1; then staticcheck ./...; else echo "staticcheck not installed: skipped"; fi

tidy:
	$(GO) mod tidy

clean:
	rm -rf bin $(RUN_DIR)
