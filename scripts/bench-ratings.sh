#!/usr/bin/env bash
# Rating write latency through a node: the embedded store, then the CQL
# cluster at LOCAL_QUORUM (started with scripts/cql-cluster.sh up; pass its
# CQL_NODES). The bot prepares one match per rating, then rates them at RATE
# per second for DURATION and prints p50/p99.
#
#   CQL_NODES=127.0.0.1:9042,... scripts/bench-ratings.sh [RATE] [DURATION]   default 500 10s
#
# BOT_ARGS adds bot flags (e.g. "--warmup 200ms": the bot cannot prepare more
# than 10,000 matches at present). BENCH_BIN=DIR runs the node and bot binaries in DIR instead of building
# them (to compare against a saved build). PERF=FILE records the node with
# `perf record -g` into FILE.<label> for 5 s, starting PERF_AT seconds after
# the bot (default 0; set it past the bot's seeding to profile the ratings).
set -euo pipefail
cd "$(dirname "$0")/.."
RATE="${1:-500}"; DURATION="${2:-10s}"
WORK="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT INT TERM

BIN="${BENCH_BIN:-target/release}"
[[ -n "${BENCH_BIN:-}" ]] || cargo build --release --locked -p node -p bot >/dev/null 2>&1
run() { # label, node flags...
  local label=$1; shift
  RUST_LOG=warn "$BIN/node" --listen 127.0.0.1:18391 --admin-listen 127.0.0.1:0 --regions regions \
    --region dhaka-north --data-dir "$WORK/$label" --ready-file "$WORK/$label.ready" \
    --match-interval 200ms "$@" >/dev/null 2>"$WORK/$label.log" &
  local pid=$!
  for _ in $(seq 200); do [[ -f "$WORK/$label.ready" ]] && break; sleep 0.1; done
  echo "== $label: $RATE ratings/s for $DURATION"
  local perf=
  if [[ -n "${PERF:-}" ]]; then
    (sleep "${PERF_AT:-0}"; perf record -g -F 499 -o "$PERF.$label" -p "$pid" -- sleep 5 2>/dev/null) &
    perf=$!
  fi
  # Positions inside dhaka-north, so the one node owns every request.
  "$BIN/bot" --endpoint http://127.0.0.1:18391 --area 23.80,90.32,23.94,90.54 \
    --rate "$RATE" --load ratings --duration "$DURATION" --concurrency 64 --no-progress ${BOT_ARGS:-} \
    | grep -E "achieved|latency|p50|p99|status|[0-9]{3}:" || true
  if [[ -n "$perf" ]]; then wait "$perf" 2>/dev/null || true; fi
  kill "$pid"; wait "$pid" 2>/dev/null || true
}
run embedded
if [[ -n "${CQL_NODES:-}" ]]; then
  run cql --cql-nodes "$CQL_NODES" --cql-keyspace "bench_$(date +%s)"
else
  echo "(CQL_NODES unset: cluster run skipped)"
fi
