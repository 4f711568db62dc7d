#!/usr/bin/env bash
# Memory under sustained traffic: two peered nodes, RATE requests/s to node A
# for LONG; prints both nodes' RSS at SHORT and at LONG. Flat memory means
# the second figure is within ~20% of the first.
#
#   scripts/bench-memory.sh [RATE] [SHORT_SECS] [LONG_SECS]     default 1000 60 600
set -euo pipefail
cd "$(dirname "$0")/.."
RATE="${1:-1000}"; SHORT="${2:-60}"; LONG="${3:-600}"
WORK="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT INT TERM

cargo build --release --locked -p node -p bot >/dev/null 2>&1
NODE=target/release/node
$NODE certs --dir "$WORK/certs" --node mem-a --node mem-b --ip 127.0.0.1 >/dev/null
$NODE token-key >"$WORK/certs/token.keys"
start() { # name http-port mesh-port peer=addr (admin: http-port + 10)
  RUST_LOG=warn $NODE --node-id "$1" --region bench --listen "127.0.0.1:$2" \
    --admin-listen "127.0.0.1:$(( $2 + 10 ))" --mesh-listen "127.0.0.1:$3" --peer "$4" \
    --certs "$WORK/certs" --token-keys-file "$WORK/certs/token.keys" \
    --data-dir "$WORK/$1" --mesh-ready-grace 1s >/dev/null 2>"$WORK/$1.log" &
}
start mem-a 18281 19281 mem-b=127.0.0.1:19282; A=$!
start mem-b 18282 19282 mem-a=127.0.0.1:19281; B=$!
sleep 2
target/release/bot --endpoint http://127.0.0.1:18281 --rate "$RATE" --concurrency 16 \
  --duration "$((LONG + 5))s" --warmup 0s --no-progress >"$WORK/bot.txt" 2>&1 &
rss() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
sleep "$SHORT"; echo "after ${SHORT}s: A $(rss "$A") MiB, B $(rss "$B") MiB"
sleep "$((LONG - SHORT))"; echo "after ${LONG}s: A $(rss "$A") MiB, B $(rss "$B") MiB"
curl -s http://127.0.0.1:18292/debug/state; echo
