#!/usr/bin/env bash
# `make run`: start the embedded default in a fresh data directory, ingest the sample
# datasets (written by the project itself, with a few bad rows), print the summary, stop.
set -euo pipefail
RUN_DIR=${RUN_DIR:-.run}
BIN=${BIN:-bin/largeforge}
PORT=${LF_PORT:-4222}
export LARGEFORGE_NATS="nats://127.0.0.1:${PORT}"

rm -rf "$RUN_DIR"
mkdir -p "$RUN_DIR"
"$BIN" samples --output "$RUN_DIR/samples" >/dev/null
"$BIN" model init --preset tiny --output "$RUN_DIR/models/tiny" >/dev/null

"$BIN" up --data-dir "$RUN_DIR/lf-data" --model tiny="$RUN_DIR/models/tiny" --listen "127.0.0.1:${PORT}" --metrics-addr 127.0.0.1:0 --log-format json >"$RUN_DIR/up.log" 2>&1 &
UP_PID=$!
trap 'kill -INT $UP_PID 2>/dev/null || true; wait $UP_PID 2>/dev/null || true' EXIT

for _ in $(seq 1 100); do
  if "$BIN" datasets list >/dev/null 2>&1; then break; fi
  if ! kill -0 $UP_PID 2>/dev/null; then echo "largeforge up failed:"; cat "$RUN_DIR/up.log"; exit 1; fi
  sleep 0.2
done

echo "== largeforge up: NATS at $LARGEFORGE_NATS, data in $RUN_DIR/lf-data (log: $RUN_DIR/up.log)"
echo
echo "== largeforge ingest --dataset instruct-v1 --format alpaca $RUN_DIR/samples/alpaca.jsonl"
"$BIN" ingest --log-level warning --log-format console --dataset instruct-v1 --format alpaca "$RUN_DIR/samples/alpaca.jsonl" 2>/dev/null
echo
echo "== largeforge ingest --dataset chat-v1 $RUN_DIR/samples/sharegpt.json   (format auto)"
"$BIN" ingest --log-level warning --dataset chat-v1 "$RUN_DIR/samples/sharegpt.json" 2>/dev/null
echo
echo "== largeforge ingest --dataset prefs-v1 --format dpo - < $RUN_DIR/samples/dpo.jsonl   (stdin)"
"$BIN" ingest --log-level warning --dataset prefs-v1 --format dpo - <"$RUN_DIR/samples/dpo.jsonl" 2>/dev/null
echo
echo "== the same alpaca file again: nothing new"
"$BIN" ingest --log-level warning --dataset instruct-v1 "$RUN_DIR/samples/alpaca.jsonl" 2>/dev/null
# Rejects are written by the sink from the dead-letter stream; give it a moment.
sleep 1
echo
echo "== largeforge datasets list"
"$BIN" datasets list
echo
echo "== largeforge datasets show instruct-v1"
"$BIN" datasets show instruct-v1
echo
echo "== first rejects of instruct-v1 ($RUN_DIR/lf-data/datasets/instruct-v1/rejects.jsonl)"
head -n 3 "$RUN_DIR/lf-data/datasets/instruct-v1/rejects.jsonl" | cut -c1-240
echo
ls -l "$RUN_DIR"/lf-data/datasets/*/
echo
echo "== largeforge submit $RUN_DIR/samples/prompts.jsonl --model tiny --wait   (a batch job on the model made by 'model init')"
SUBMIT_OUT=$("$BIN" submit --log-level warning "$RUN_DIR/samples/prompts.jsonl" --model tiny --wait --timeout 5m)
echo "$SUBMIT_OUT"
JOB=$(echo "$SUBMIT_OUT" | grep -o 'batch_[A-Za-z0-9_-]*' | head -n 1)
echo
echo "== largeforge jobs status $JOB"
"$BIN" jobs status "$JOB"
echo
echo "== largeforge jobs results $JOB --limit 3   (the whole output: $RUN_DIR/lf-data/jobs/$JOB/)"
"$BIN" jobs results "$JOB" --limit 3 | cut -c1-300
echo "(the model made by 'model init' has random weights: its text is noise until it is trained)"
echo
echo "== errors of $JOB"
"$BIN" jobs results "$JOB" --errors | cut -c1-300
ls -l "$RUN_DIR/lf-data/jobs/$JOB/"
