#!/usr/bin/env bash
# The node's intake as a share of what this machine allows, measured in one
# run: wrk (closed loop, mixed rider and driver POSTs) against
#
#   bare    axum parsing the node's request types and answering 202
#           (node/examples/intake_ceiling.rs)
#   fsync   the same, each 202 after a group-committed fdatasync of the
#           request: the durable ceiling of this disk
#   node    one node alone (durable intake, matching rounds running)
#
# in turn, RUNS times, each on an empty data folder. Counts only 202s
# (goodput), prints each run and then the medians and the node's share of
# both ceilings.
#
#   scripts/bench-ceiling.sh [RUNS] [CONNECTIONS] [SECONDS]   default 3 32 5
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${1:-3}"
CONNECTIONS="${2:-32}"
SECONDS_EACH="${3:-5}"
WORK="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT INT TERM

command -v wrk >/dev/null ||
  { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
cargo build --release --locked -p node --bin node --example intake_ceiling >/dev/null 2>&1
RELEASE="${CARGO_TARGET_DIR:-target}/release"
PORT=18480

# Riders and drivers in turn, each at its own spot of greater Dhaka.
cat >"$WORK/mixed.lua" <<'LUA'
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  n = n + 1
  local lat = 23.70 + (n % 997) * 0.0002
  local lon = 90.35 + (n % 991) * 0.0002
  if n % 2 == 0 then
    return wrk.format(nil, "/rider", nil, string.format(
      '{"name":"r%d","position":{"lat":%.5f,"lon":%.5f},"destination":{"lat":23.75,"lon":90.39}}',
      n, lat, lon))
  end
  return wrk.format(nil, "/driver", nil, string.format(
    '{"name":"d%d","car_number":"DHA-%d","position":{"lat":%.5f,"lon":%.5f}}', n, n % 10000, lat, lon))
end
done = function(summary, latency, requests)
  local errors = summary.errors.status + summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout
  io.write(string.format("GOODPUT %.0f P50 %.2f P99 %.2f\n",
    (summary.requests - errors) / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
LUA

start() {
  rm -rf "$WORK/data" "$WORK/ready"
  case "$1" in
    bare | fsync)
      "$RELEASE/examples/intake_ceiling" "$1" "127.0.0.1:$PORT" --dir "$WORK/data" >"$WORK/ready" &
      ;;
    node)
      RUST_LOG=warn "$RELEASE/node" --node-id ceiling-bench --region bench \
        --listen "127.0.0.1:$PORT" --admin-listen 127.0.0.1:0 --data-dir "$WORK/data" \
        --ready-file "$WORK/ready.json" >/dev/null 2>"$WORK/node.log" &
      ;;
  esac
  pid=$!
  for _ in $(seq 100); do
    [[ -s "$WORK/ready" || -s "$WORK/ready.json" ]] && break
    sleep 0.05
  done
  rm -f "$WORK/ready.json"
}

measure() {
  wrk -t1 -c"$CONNECTIONS" -d"${SECONDS_EACH}s" -s "$WORK/mixed.lua" "http://127.0.0.1:$PORT" |
    awk '/^GOODPUT/ {print $2, $4, $6}'
}

declare -A goodput
shares=""
printf '%-4s %-6s %12s %9s %9s\n' run target "202s per s" "p50 ms" "p99 ms"
for run in $(seq "$RUNS"); do
  for target in bare fsync node; do
    start "$target"
    read -r rate p50 p99 < <(measure)
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
    goodput[$target]+="$rate "
    [[ $target == fsync ]] && ceiling=$rate
    printf '%-4s %-6s %12s %9s %9s\n' "$run" "$target" "$rate" "$p50" "$p99"
  done
  # The node against the ceiling of the same run: the machine's state
  # (what else runs, the disk's mood) is shared within a run.
  shares+="$(awk -v a="$rate" -v b="$ceiling" 'BEGIN {printf "%.2f", a / b}') "
done

median() { tr ' ' '\n' | grep . | sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
bare=$(median <<<"${goodput[bare]}")
fsync=$(median <<<"${goodput[fsync]}")
node=$(median <<<"${goodput[node]}")
echo
echo "medians of $RUNS (202s per second, wrk -t1 -c$CONNECTIONS, ${SECONDS_EACH}s each):"
echo "  bare axum           $bare"
echo "  axum + group fsync  $fsync   ($(awk -v a="$fsync" -v b="$bare" 'BEGIN {printf "%.2f", a / b}') of bare)"
echo "  node alone          $node   ($(awk -v a="$node" -v b="$fsync" 'BEGIN {printf "%.2f", a / b}') of the durable ceiling, $(awk -v a="$node" -v b="$bare" 'BEGIN {printf "%.2f", a / b}') of bare)"
echo "  node / durable ceiling, run by run: $shares(median $(median <<<"$shares"))"
