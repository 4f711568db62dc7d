#!/usr/bin/env bash
# Intake benchmark: one node with durable intake (every 202 after its group
# commit's fsync), no peers, fed mixed rider and driver POSTs by the bot's
# load mode (open loop) for 10 s after a 2 s warm-up; matching rounds run as
# usual (every 25 ms, a node alone's default), so commits and websocket
# publishing compete with intake. Each run
# starts a fresh node on an empty data folder and prints one line: the rate
# achieved, the bot's p50/p99 (send to answer, its own queueing on this
# machine's cores included), and the node's p99 for a 202 (router entry to
# response, from `http_request_duration_seconds`), and the node's CPU
# seconds over the run (12 s, warm-up included).
#
#   scripts/bench-intake.sh [RATE] [CONCURRENCY] [RUNS]    default 20000 64 3
#   NODE_ARGS="--match-interval 1s" scripts/bench-intake.sh ...   (extra node flags)
set -euo pipefail
cd "$(dirname "$0")/.."
RATE="${1:-20000}"
CONCURRENCY="${2:-64}"
RUNS="${3:-3}"
WORK="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT INT TERM

cargo build --release --locked -p node -p bot >/dev/null 2>&1
RELEASE="${CARGO_TARGET_DIR:-target}/release"
NODE="$RELEASE/node" BOT="$RELEASE/bot"
URL=http://127.0.0.1:18411 ADMIN=http://127.0.0.1:18412

for run in $(seq "$RUNS"); do
  rm -rf "$WORK/data" "$WORK/ready"
  RUST_LOG=warn "$NODE" --node-id intake-bench --region bench --listen 127.0.0.1:18411 \
    --admin-listen 127.0.0.1:18412 --data-dir "$WORK/data" --ready-file "$WORK/ready" \
    ${NODE_ARGS:-} >/dev/null 2>"$WORK/node.log" &
  pid=$!
  until [[ -f "$WORK/ready" ]]; do sleep 0.05; done
  ticks_before=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  "$BOT" --endpoint "$URL" --rate "$RATE" --concurrency "$CONCURRENCY" --duration 10s \
    --warmup 2s --no-progress --summary-json "$WORK/summary.json" >"$WORK/bot.out" 2>&1 || true
  node_p99=$(curl -s "$ADMIN/metrics" | awk '/^http_request_duration_seconds\{/ && /status="202"/ \
    && /quantile="0.99"/ {if ($2 > m) m = $2} END {printf "%.2f", m * 1000}')
  cpu=$(awk -v b="$ticks_before" -v t="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15 - b) / t}' "/proc/$pid/stat")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  python3 - "$WORK/summary.json" "$run" "$RATE" "$CONCURRENCY" "$node_p99" "$cpu" <<'PY'
import json, sys
s = json.load(open(sys.argv[1])); run, rate, conc, node_p99, cpu = sys.argv[2:7]
l, r = s["latency_ms"], s["requests"]
print(f"run {run}: {rate}/s offered at c={conc}: {s['load']['achieved_per_sec']:.0f}/s achieved, "
      f"bot p50 {l['p50']:.2f} ms p99 {l['p99']:.2f} ms, node p99 (202) {node_p99} ms, node CPU {cpu} s, "
      f"sent {r['sent']}, shed {r.get('shed', 0)}, transport errors {r['transport_errors']}")
PY
done
