#!/usr/bin/env bash
# Catch-up benchmark: node A takes RECORDS requests (the bot's load mode,
# with a long TTL and a pickup radius of a metre, so that they all stay
# live and unmatched), then node B, empty, joins over QUIC. Reports how long B takes,
# from its start, to hold exactly A's state (one digest), and the bytes A
# sent it.
#
#   scripts/bench-catchup.sh [RECORDS]      e.g. 100000
set -euo pipefail
cd "$(dirname "$0")/.."
RECORDS="${1:-100000}"
source scripts/lib/bench-pair.sh
pair_certs catchup-a catchup-b
start() { pair_start "$@" --request-ttl 10m --max-pickup-km 0.001; }
digest() { curl -s "http://127.0.0.1:$1/debug/state" \
  | python3 -c "import json,sys; print(json.load(sys.stdin)['digest'])" 2>/dev/null || true; }

start catchup-a 18281 19281 catchup-b=127.0.0.1:19282
until [[ -n "$(digest 18291)" ]]; do sleep 0.2; done
RATE=10000
"$BOT" --endpoint http://127.0.0.1:18281 --rate "$RATE" --concurrency 64 \
  --duration "$(( (RECORDS + RATE - 1) / RATE ))s" --warmup 0s --no-progress >/dev/null 2>&1
sleep 1
held=$(curl -s http://127.0.0.1:18291/metrics | awk '$1 ~ /^ride_requests_accepted_total/ {s += $2} END {print s+0}')

started=$(date +%s.%N)
start catchup-b 18282 19282 catchup-a=127.0.0.1:19281
target=$(digest 18291)
until [[ "$(digest 18292)" == "$target" ]]; do sleep 0.05; done
ended=$(date +%s.%N)
sent=$(curl -s http://127.0.0.1:18291/metrics | awk '$1 ~ /^mesh_bytes_sent_total/ {s += $2} END {print s+0}')
awk -v a="$started" -v b="$ended" -v n="$held" -v s="$sent" \
  'BEGIN {printf "catch-up: %d live records on A; B (empty) held the same digest %.2f s after it started; A sent %.1f MB\n", n, b - a, s / 1e6}'
