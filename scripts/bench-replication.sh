#!/usr/bin/env bash
# Replication benchmark: two nodes peered over QUIC (mutual TLS) on
# loopback; the bot's load mode sends RATE requests/s to node A; reports the
# replication lag A -> B (p50/p99 from B's /metrics, on its admin listener),
# bytes on the wire per
# replicated request next to the request's JSON size, intake latency, and
# both nodes' RSS.
#
#   scripts/bench-replication.sh [RATE] [DURATION]      e.g. 1000 30s
set -euo pipefail
cd "$(dirname "$0")/.."
RATE="${1:-1000}"
DURATION="${2:-20s}"
source scripts/lib/bench-pair.sh
pair_certs bench-a bench-b
pair_start bench-a 18181 19181 bench-b=127.0.0.1:19182
pair_start bench-b 18182 19182 bench-a=127.0.0.1:19181
sleep 2

"$BOT" --endpoint http://127.0.0.1:18181 --rate "$RATE" --concurrency 32 \
  --duration "$DURATION" --warmup 2s --no-progress --summary-json "$WORK/bot.json" \
  --area 23.70,90.35,23.90,90.50 | grep -E "latency|rate "
sleep 1

metric() { curl -s "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 ~ "^"m {sum += $2} END {print sum+0}'; }
quantile() { curl -s "http://127.0.0.1:$1/metrics" | grep "^mesh_replication_lag_seconds{" | grep "quantile=\"$2\"" | awk '{print $2*1000}'; }
accepted=$(metric 18191 'ride_requests_accepted_total')
sent=$(metric 18191 'mesh_bytes_sent_total')
encoded=$(metric 18191 'mesh_encoded_bytes_sent_total')
json=$(printf '%s' '{"name":"Rider 0042","position":{"lat":23.812345,"lon":90.412345},"destination":{"lat":23.765432,"lon":90.398765}}' | wc -c)
echo "replication lag A->B: p50 $(quantile 18192 0.5) ms, p99 $(quantile 18192 0.99) ms"
awk -v b="$sent" -v e="$encoded" -v n="$accepted" -v j="$json" 'BEGIN {printf "wire: %.1f bytes per request (%d requests, %d bytes; %.1f before compression); request JSON %d bytes; ratio %.2f\n", b/n, n, b, e/n, j, (b/n)/j}'
for p in $(jobs -p); do grep VmRSS "/proc/$p/status" | awk -v p="$p" '{print "RSS pid " p ": " $2/1024 " MiB"}'; done
