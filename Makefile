# LargeForge developer entry points. CI runs `make test` (through .ci/run).
GO      ?= go
BIN     := bin/largeforge
RUN_DIR ?= .run

.PHONY: all build install run test test-short bench lint tidy clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/largeforge

# largeforge into $(go env GOBIN), else $(go env GOPATH)/bin: put that on your PATH.
install:
	$(GO) install ./cmd/largeforge

# The main job end to end on the embedded default, in a fresh data directory.
run: build
	RUN_DIR=$(RUN_DIR) BIN=$(BIN) bash scripts/run.sh

test:
	$(GO) test -count=1 -timeout 20m ./...

test-short:
	$(GO) test -short -count=1 ./...

# Benchmarks print their comparisons (floor vs. through the bus, backend matmul rate,
# three replicas vs. one on a three-node loopback cluster: LF_BENCH_ECHO_MSGS,
# LF_BENCH_CLUSTER_REQUESTS size the cluster runs).
bench:
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 30m ./producers/ingest/ ./model/... ./consumers/infer/ ./producers/submit/ ./modelstore/ ./consumers/resultsink/
	$(GO) test -run '^$$' -bench 'Cluster' -benchtime 1x -timeout 30m ./pipeline/

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet ./...
	@if command -v staticcheck >/dev/null 2>&1; then staticcheck ./...; else echo "staticcheck not installed: skipped"; fi

tidy:
	$(GO) mod tidy

clean:
	rm -rf bin $(RUN_DIR)
