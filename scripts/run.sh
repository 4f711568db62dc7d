#!/usr/bin/env bash
# Builds and runs one region node with the bot spamming it, until Ctrl-C.
# State goes to .mesh/ (delete it to start afresh).
#
#   scripts/run.sh [bot flags...]      e.g. scripts/run.sh --riders 200 --drivers 200
set -euo pipefail
cd "$(dirname "$0")/.."

PORT="${PORT:-8080}"
ADMIN_PORT="${ADMIN_PORT:-9100}"
STATE=.mesh/local
mkdir -p "$STATE"

cargo build --release --locked -p node -p bot

pids=()
cleanup() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

rm -f "$STATE/ready.json"
./target/release/node --listen "127.0.0.1:$PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" --region local \
  --data-dir "$STATE" --ready-file "$STATE/ready.json" 2>"$STATE/node.log" &
pids+=($!)
for _ in $(seq 100); do [[ -f "$STATE/ready.json" ]] && break; sleep 0.1; done
[[ -f "$STATE/ready.json" ]] || { echo "node did not start; see $STATE/node.log" >&2; exit 1; }
echo "node listening on http://127.0.0.1:$PORT, map on http://127.0.0.1:$ADMIN_PORT/ (log: $STATE/node.log)"
echo "try: curl -s http://127.0.0.1:$ADMIN_PORT/matches?limit=3 | jq ."

./target/release/bot --endpoint "http://127.0.0.1:$PORT" "$@" &
pids+=($!)
wait "${pids[-1]}"
