#!/usr/bin/env bash
# Memory under sustained traffic: two peered nodes, RATE requests/s to node A
# for LONG; prints both nodes' RSS at SHORT and at LONG. Flat memory means
# the second figure is within ~20% of the first.
#
#   scripts/bench-memory.sh [RATE] [SHORT_SECS] [LONG_SECS]     default 1000 60 600
set -euo pipefail
cd "$(dirname "$0")/.."
RATE="${1:-1000}"; SHORT="${2:-60}"; LONG="${3:-600}"
source scripts/lib/bench-pair.sh
pair_certs mem-a mem-b
pair_start mem-a 18281 19281 mem-b=127.0.0.1:19282; A=$PAIR_PID
pair_start mem-b 18282 19282 mem-a=127.0.0.1:19281; B=$PAIR_PID
sleep 2
"$BOT" --endpoint http://127.0.0.1:18281 --rate "$RATE" --concurrency 16 \
  --duration "$((LONG + 5))s" --warmup 0s --no-progress >"$WORK/bot.txt" 2>&1 &
rss() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
sleep "$SHORT"; echo "after ${SHORT}s: A $(rss "$A") MiB, B $(rss "$B") MiB"
sleep "$((LONG - SHORT))"; echo "after ${LONG}s: A $(rss "$A") MiB, B $(rss "$B") MiB"
curl -s http://127.0.0.1:18292/debug/state; echo
