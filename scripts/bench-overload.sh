#!/usr/bin/env bash
# Overload benchmark (goodput, not answers): a burst far past capacity,
# uniform over the three regions of regions/, sent by the bot's load mode to
# each position's own region; first against the three-region mesh on
# loopback (QUIC, mutual TLS), then against one node alone with the same
# burst. Reports, per setup: riders accepted (202), shed (503), the shed
# answers' latency, how long after the burst every node held one digest,
# and riders matched (once converged, a few seconds later) per second of
# burst, with the mesh/single ratio. Shed latency is given twice: as the
# bot measures it (send to answer, queueing on this machine's shared cores
# included) and as the nodes time it (router entry to response, the worst
# node's p99 of `http_request_duration_seconds{status="503"}`), and the
# replication lag's p99 (`mesh_replication_lag_seconds`, the worst node and
# peer; 0 for one node alone). Accepted requests' p99 is given both ways
# too (the nodes': the worst node's p99 for a `202`).
#
#   scripts/bench-overload.sh [RATE] [BURST] [CONCURRENCY]   e.g. 30000 8s 48
#   NODE_ARGS="--max-intake-queue 64" scripts/bench-overload.sh ...   (tighter limits: more shed)
set -euo pipefail
cd "$(dirname "$0")/.."
RATE="${1:-30000}"
BURST="${2:-8s}"
CONCURRENCY="${3:-48}"
WORK="$(mktemp -d)"; echo "work: $WORK" >&2
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; [[ -n "${BENCH_KEEP:-}" ]] || rm -rf "$WORK"' EXIT

cargo build --release --locked -p node -p bot >/dev/null 2>&1
NODE=target/release/node BOT=target/release/bot
REGIONS=(dhaka-north dhaka-southeast dhaka-southwest)
$NODE certs --dir "$WORK/certs" "${REGIONS[@]/#/--node=}" --ip 127.0.0.1 >/dev/null
$NODE token-key >"$WORK/certs/token.keys"

start() { # index id mesh-args...  (public 1850i, admin 1860i, quic 1870i)
  local i=$1 id=$2; shift 2
  RUST_LOG=warn $NODE --node-id "$id" --listen "127.0.0.1:1850$i" \
    --admin-listen "127.0.0.1:1860$i" --certs "$WORK/certs" \
    --token-keys-file "$WORK/certs/token.keys" --data-dir "$WORK/$id-data" \
    --mesh-ready-grace 1s "$@" ${NODE_ARGS:-} 2>"$WORK/$id.log" &
}
wait_ready() { for i in "$@"; do
  until curl -sf "http://127.0.0.1:1860$i/debug/state" | grep -q '"ready":true'; do sleep 0.2; done
done; }
accepted_riders() { curl -s "http://127.0.0.1:1860$1/metrics" \
  | awk '$1 ~ /^ride_requests_accepted_total\{kind="rider"\}/ {print $2+0}'; }
decided_matches() { curl -s "http://127.0.0.1:1860$1/metrics" \
  | awk '$1 == "ride_matches_decided_total" {n = $2} END {print n+0}'; }
now() { date +%s.%N; }

# burst LABEL NODE-INDEXES BOT-ARGS...: prints one result line.
burst() {
  local label=$1 nodes=$2; shift 2
  $BOT "$@" --rate "$RATE" --concurrency "$CONCURRENCY" --duration "$BURST" --warmup 0s \
    --no-progress --summary-json "$WORK/$label.json" >"$WORK/$label.bot" 2>&1 || true
  local ended converged_at node_shed_p99 node_p99 lag_p99 urls=() i
  ended=$(now)
  for i in $nodes; do curl -s "http://127.0.0.1:1860$i/metrics"; done >"$WORK/$label.metrics"
  # worst PATTERN DIGITS: the largest p99 (in ms) over the nodes' series matching PATTERN.
  worst() { awk -v p="$1" -v d="$2" '$0 ~ p && /quantile="0.99"/ {if ($2 > m) m = $2} \
    END {printf "%.*f", d, m * 1000}' "$WORK/$label.metrics"; }
  node_shed_p99=$(worst '^http_request_duration_seconds\{.*status="503"' 3)
  node_p99=$(worst '^http_request_duration_seconds\{.*status="202"' 2)
  # Replication lag (acceptance to arrival at a peer): the worst node and peer.
  lag_p99=$(worst '^mesh_replication_lag_seconds\{' 0)
  # In step: every pair of nodes holds one digest of what they share (halo
  # replication: nodes of different regions hold different documents).
  for i in $nodes; do urls+=("n$i=http://127.0.0.1:1860$i"); done
  $BOT check converge "${urls[@]}" --label "$label" --since "$ended" --timeout 60 \
    --log "$WORK/$label.conv" >/dev/null 2>&1 || true
  converged_at=$(python3 -c "import json,sys; c=json.loads(open(sys.argv[1]).readlines()[-1]); \
print(float(sys.argv[2]) + c['seconds'] if c['converged'] else '')" "$WORK/$label.conv" "$ended")
  sleep 5 # matching of what is still pending
  local accepted=0 matched=0
  # A match is counted by the one node that committed it.
  for i in $nodes; do
    accepted=$(( accepted + $(accepted_riders "$i") ))
    matched=$(( matched + $(decided_matches "$i") ))
  done
  python3 - "$WORK/$label.json" "$label" "$accepted" "$matched" "$ended" "${converged_at:-}" "$BURST" "$node_shed_p99" "$lag_p99" "$node_p99" <<'PY'
import json, sys
s = json.load(open(sys.argv[1])); label, accepted, matched = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
ended, converged, burst, node_shed_p99, lag_p99, node_p99 = float(sys.argv[5]), sys.argv[6], sys.argv[7], sys.argv[8], sys.argv[9], sys.argv[10]
secs = float(burst.rstrip('s'))
r = s['requests']; shed = r.get('shed', 0); sl = r.get('shed_latency_ms', {})
conv = f"{float(converged) - ended:.2f}s" if converged else "NOT within 60 s"
l = s['latency_ms']
print(f"{label}: sent {r['sent']} ({s['load']['achieved_per_sec']:.0f}/s, p50 {l['p50']:.1f} ms, p99 {l['p99']:.1f} ms at the bot, p99 {node_p99} ms in the nodes), riders accepted {accepted}, shed {shed} (p50 {sl.get('p50', 0):.2f} ms, "
      f"p99 {sl.get('p99', 0):.2f} ms at the bot, {node_shed_p99} ms in the nodes), replication lag p99 {lag_p99} ms, in step {conv} after the burst, riders matched {matched} "
      f"({100 * matched / max(accepted, 1):.1f}% of accepted), {matched / secs:.0f} matched/s of burst")
open(sys.argv[1] + '.goodput', 'w').write(str(matched / secs))
PY
}

peers() { local i=$1 out=() j; for j in 0 1 2; do
  (( j != i )) && out+=(--peer "${REGIONS[$j]}=127.0.0.1:1870$j"); done; echo "${out[@]}"; }
for i in 0 1 2; do
  # shellcheck disable=SC2046
  start "$i" "${REGIONS[$i]}" --regions regions --region "${REGIONS[$i]}" \
    --mesh-listen "127.0.0.1:1870$i" $(peers "$i")
done
wait_ready 0 1 2
burst mesh "0 1 2" --regions regions --endpoint http://127.0.0.1:18500,http://127.0.0.1:18501,http://127.0.0.1:18502
kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true

start 3 single --region dhaka
wait_ready 3
burst single "3" --endpoint http://127.0.0.1:18503 --area 23.60,90.30,23.95,90.55
python3 -c "m=float(open('$WORK/mesh.json.goodput').read()); s=float(open('$WORK/single.json.goodput').read()); print(f'goodput ratio mesh/single: {m / max(s, 1e-9):.2f}')"
