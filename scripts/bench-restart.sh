#!/usr/bin/env bash
# Restart to ready: one node takes COUNT requests (the bot's load mode, half
# riders, half drivers, so matches are committed too), is killed with
# kill -9, and is restarted three times; prints, for each restart, how long
# from the process's start until it answers /debug/state with ready = true,
# holding every request again, and the records its journal held.
#
#   scripts/bench-restart.sh [COUNT]     default 100000
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT="${1:-100000}"
RATE=20000
WORK="$(mktemp -d)"
trap 'kill -9 $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT INT TERM

cargo build --release --locked -p node -p bot >/dev/null 2>&1
NODE=target/release/node
URL=http://127.0.0.1:18391 ADMIN=http://127.0.0.1:18392
start() {
  RUST_LOG=warn $NODE --node-id restart-bench --region bench --listen 127.0.0.1:18391 \
    --admin-listen 127.0.0.1:18392 \
    --data-dir "$WORK/data" --request-ttl 10m --match-retention 10m >>"$WORK/node.log" 2>&1 &
  PID=$!
}
ms() { date +%s%3N; }
ready() { curl -sf "$ADMIN/debug/state" 2>/dev/null | grep -q '"ready":true'; }

start
until ready; do sleep 0.05; done
target/release/bot --endpoint "$URL" --rate "$RATE" --concurrency 32 \
  --duration "$(( (COUNT + RATE - 1) / RATE ))s" --warmup 0s --no-progress >"$WORK/bot.txt" 2>&1
sleep 2
before="$(curl -sf "$ADMIN/debug/state")"
echo "before: $before"
echo "journal: $(du -sh "$WORK/data/mesh" | cut -f1)"
for run in 1 2 3; do
  kill -9 "$PID"; wait "$PID" 2>/dev/null || true
  t0="$(ms)"
  start
  until ready; do sleep 0.01; done
  t1="$(ms)"
  echo "restart $run: ready after $(( t1 - t0 )) ms: $(curl -sf "$ADMIN/debug/state")"
done
