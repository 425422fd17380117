#!/usr/bin/env bash
# Runs every Go fuzz target (func FuzzX in a *_test.go file) for FUZZTIME
# each (default 30s), one target at a time (go test -fuzz takes one target
# per package run). FUZZ narrows the targets by a regular expression on
# their names. New failing inputs land in the package's testdata/fuzz/FuzzX,
# where `go test` (and so `make test`) runs them as seeds from then on.
set -euo pipefail
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-30s}
FUZZ=${FUZZ:-.}
failed=0
ran=0
while IFS=: read -r file _ decl; do
	name=${decl#func }
	name=${name%%(*}
	[[ $name =~ $FUZZ ]] || continue
	pkg=./$(dirname "$file")
	echo "== $pkg $name ($FUZZTIME)"
	ran=$((ran + 1))
	if ! $GO test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" "$pkg"; then
		failed=$((failed + 1))
		echo "!! $pkg $name failed: its input is in $pkg/testdata/fuzz/$name"
	fi
done < <(git grep --untracked -n '^func Fuzz[A-Za-z0-9_]*(f \*testing.F)' -- '*_test.go' | sort)
echo "make fuzz: $ran targets, $failed failed"
[ "$failed" -eq 0 ]
