#!/usr/bin/env bash
# Overload benchmark (goodput, not answers): a burst far past capacity,
# uniform over the three regions of regions/: one load generator (the bot's
# load mode) per region, drawing positions inside that region's area, with a
# third of the rate and of the concurrency each. First the generators send to
# their own regions' nodes of the three-region mesh on loopback (QUIC,
# mutual TLS), then to the same three region nodes unpeered (each alone:
# the difference is what replication costs), then to one node alone.
# Reports, per setup: riders accepted (202), shed (503), the shed
# answers' latency, how long after the burst every node held one digest,
# and riders matched (once converged, a few seconds later) per second of
# burst, with the mesh/single ratio. Shed latency is given twice: as the
# bot measures it (send to answer, queueing on this machine's shared cores
# included) and as the nodes time it (router entry to response, the worst
# node's p99 of `http_request_duration_seconds{status="503"}`), and the
# replication lag's p99 (`mesh_replication_lag_seconds`, the worst node and
# peer; 0 for one node alone). Accepted requests' p99 is given both ways
# too (the nodes': the worst node's p99 for a `202`). The bot's latencies
# are the worst generator's. The nodes' CPU seconds during the burst, and
# per request sent, say what the work cost apart from how fast it went.
#
# The default burst offers more than either setup can take (50,000/s) on
# enough connections (256) that neither waits on its own latency: a mesh
# node batches commits up to 5 ms apart, so a closed loop of 48 bound the
# mesh to about 48 / 5 ms once the load generator stopped desynchronising
# it.
#
#   scripts/bench-overload.sh [RATE] [BURST] [CONCURRENCY]   default 50000 8s 256
#   NODE_ARGS="--max-intake-queue 64" scripts/bench-overload.sh ...   (tighter limits: more shed)
#   BENCH_BIN=DIR scripts/bench-overload.sh ...   (the node and bot in DIR, e.g. a saved build)
set -euo pipefail
cd "$(dirname "$0")/.."
RATE="${1:-50000}"
BURST="${2:-8s}"
CONCURRENCY="${3:-256}"
WORK="$(mktemp -d)"; echo "work: $WORK" >&2
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; [[ -n "${BENCH_KEEP:-}" ]] || rm -rf "$WORK"' EXIT

BIN="${BENCH_BIN:-${CARGO_TARGET_DIR:-target}/release}"
[[ -n "${BENCH_BIN:-}" ]] || cargo build --release --locked -p node -p bot >/dev/null 2>&1
NODE="$BIN/node" BOT="$BIN/bot"
REGIONS=(dhaka-north dhaka-southeast dhaka-southwest)
$NODE certs --dir "$WORK/certs" "${REGIONS[@]/#/--node=}" --ip 127.0.0.1 >/dev/null
$NODE token-key >"$WORK/certs/token.keys"

start() { # index id mesh-args...  (public 1850i, admin 1860i, quic 1870i)
  local i=$1 id=$2; shift 2
  RUST_LOG=warn $NODE --node-id "$id" --listen "127.0.0.1:1850$i" \
    --admin-listen "127.0.0.1:1860$i" --certs "$WORK/certs" \
    --token-keys-file "$WORK/certs/token.keys" --data-dir "$WORK/$id-data" \
    --mesh-ready-grace 1s "$@" ${NODE_ARGS:-} 2>"$WORK/$id.log" &
  NODE_PIDS[i]=$!
}
NODE_PIDS=()
# cpu_ticks INDEXES: the CPU ticks the nodes have used so far, together.
cpu_ticks() { local i n=0; for i in "$@"; do
  n=$(( n + $(awk '{print $14 + $15}' "/proc/${NODE_PIDS[i]}/stat") )); done; echo "$n"; }
wait_ready() { for i in "$@"; do
  until curl -sf "http://127.0.0.1:1860$i/debug/state" | grep -q '"ready":true'; do sleep 0.2; done
done; }
# metrics FILE INDEXES: every node's /metrics, one after another, into FILE.
metrics() { local file=$1 i; shift; for i in "$@"; do
  curl -s "http://127.0.0.1:1860$i/metrics"; done >"$file"; }
now() { date +%s.%N; }

# Each region's area as the bot's --area takes it: the bounding box of its
# polygon (the shipped regions are rectangles, so the box is the area).
AREAS=()
for r in "${REGIONS[@]}"; do
  AREAS+=("$(python3 -c 'import json, sys
ring = json.load(open(sys.argv[1]))["area"]["coordinates"][0]
lat, lon = [p[1] for p in ring], [p[0] for p in ring]
print(f"{min(lat)},{min(lon)},{max(lat)},{max(lon)}")' "regions/$r.json")")
done

# burst LABEL NODE-INDEXES URL-NORTH URL-SOUTHEAST URL-SOUTHWEST: runs the
# three generators, each to its URL, and prints one result line.
burst() {
  local label=$1 nodes=$2 g generators=() ticks; shift 2
  # shellcheck disable=SC2086
  ticks=$(cpu_ticks $nodes)
  for g in 0 1 2; do
    $BOT --endpoint "$1" --area "${AREAS[$g]}" --rate $(( (RATE + g) / 3 )) \
      --concurrency $(( (CONCURRENCY + g) / 3 )) --duration "$BURST" --warmup 0s \
      --no-progress --summary-json "$WORK/$label.$g.json" >"$WORK/$label.$g.bot" 2>&1 &
    generators+=($!); shift
  done
  wait "${generators[@]}" || true
  # shellcheck disable=SC2086
  ticks=$(( $(cpu_ticks $nodes) - ticks ))
  local ended converged_at node_shed_p99 node_p99 lag_p99 urls=() i
  ended=$(now)
  # shellcheck disable=SC2086
  metrics "$WORK/$label.metrics" $nodes
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
  local accepted matched
  # shellcheck disable=SC2086
  metrics "$WORK/$label.after" $nodes
  accepted=$(awk '$1 ~ /^ride_requests_accepted_total\{kind="rider"\}/ {n += $2} END {print n+0}' "$WORK/$label.after")
  # A match is counted by the one node that committed it.
  matched=$(awk '$1 == "ride_matches_decided_total" {n += $2} END {print n+0}' "$WORK/$label.after")
  python3 - "$WORK/$label" "$label" "$accepted" "$matched" "$ended" "${converged_at:-}" "$BURST" "$node_shed_p99" "$lag_p99" "$node_p99" "$ticks" <<'PY'
import json, os, sys
runs = [json.load(open(f"{sys.argv[1]}.{g}.json")) for g in range(3)]
label, accepted, matched = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
ended, converged, burst, node_shed_p99, lag_p99, node_p99 = float(sys.argv[5]), sys.argv[6], sys.argv[7], sys.argv[8], sys.argv[9], sys.argv[10]
cpu = int(sys.argv[11]) / os.sysconf('SC_CLK_TCK')
secs = float(burst.rstrip('s'))
sent = sum(s['requests']['sent'] for s in runs)
achieved = sum(s['load']['achieved_per_sec'] for s in runs)
shed = sum(s['requests'].get('shed', 0) for s in runs)
latency = lambda s: s['latency_ms']
shed_latency = lambda s: s['requests'].get('shed_latency_ms', {})
def worst(pick, q):  # the worst generator's percentile q of what `pick` reads
    return max(pick(s).get(q, 0) for s in runs)
conv = f"{float(converged) - ended:.2f}s" if converged else "NOT within 60 s"
print(f"{label}: sent {sent} ({achieved:.0f}/s, p50 {worst(latency, 'p50'):.1f} ms, p99 {worst(latency, 'p99'):.1f} ms at the bot, p99 {node_p99} ms in the nodes), riders accepted {accepted}, shed {shed} (p50 {worst(shed_latency, 'p50'):.2f} ms, "
      f"p99 {worst(shed_latency, 'p99'):.2f} ms at the bot, {node_shed_p99} ms in the nodes), replication lag p99 {lag_p99} ms, in step {conv} after the burst, riders matched {matched} "
      f"({100 * matched / max(accepted, 1):.1f}% of accepted), {matched / secs:.0f} matched/s of burst, "
      f"nodes' CPU {cpu:.2f} s in the burst ({1e6 * cpu / max(sent, 1):.0f} us per request)")
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
burst mesh "0 1 2" http://127.0.0.1:1850{0,1,2}
kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true

for i in 0 1 2; do
  start "$i" "${REGIONS[$i]}-unpeered" --regions regions --region "${REGIONS[$i]}"
done
wait_ready 0 1 2
burst unpeered "0 1 2" http://127.0.0.1:1850{0,1,2}
kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true

start 3 single --region dhaka
wait_ready 3
burst single "3" http://127.0.0.1:18503{,,}
python3 - "$WORK" <<'PY'
import sys
goodput = {k: float(open(f"{sys.argv[1]}/{k}.goodput").read()) for k in ("mesh", "unpeered", "single")}
ratio = lambda a, b: goodput[a] / max(goodput[b], 1e-9)
print(f"goodput ratio mesh/unpeered: {ratio('mesh', 'unpeered'):.2f}, mesh/single: {ratio('mesh', 'single'):.2f}")
PY
