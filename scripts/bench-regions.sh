#!/usr/bin/env bash
# Scale-out benchmark: the same rate per region on the shipped three regions
# and on a 3 x 3 grid of nine (`node regions grid`) whose cells are as large
# as the shipped regions (0.17 x 0.25 degrees; override with BBOX), each a local mesh on
# loopback (QUIC, mutual TLS), loaded by the bot's load mode uniformly over
# its regions. Reports, per layout, each node's CPU seconds over the run and
# its resident memory at the end (medians over the nodes, and the most
# loaded), and the nine/three ratios: with halo replication a node's work
# follows its neighbours, not the number of regions.
#
#   scripts/bench-regions.sh [RATE_PER_REGION] [DURATION]   e.g. 300 20s
set -euo pipefail
cd "$(dirname "$0")/.."
MESH_DIR="${MESH_DIR:-.mesh/bench-regions}"
source scripts/lib/mesh-lib.sh

PER_REGION="${1:-300}"
DURATION="${2:-20s}"
mesh_need_binaries

# run LAYOUT_DIR AREA (the layout's box: the bot spreads over all of it): prints "nodes cpu_median cpu_max rss_median_mib rss_max_mib accepted"
run() {
  local dir="$1" area="$2" count pids=() pid
  count="$(ls "$dir"/*.json | wc -l)"
  scripts/mesh.sh --no-bot --regions "$dir" >"$MESH_DIR.mesh.log" 2>&1 &
  local mesh=$!
  for _ in $(seq 1 120); do
    sleep 1
    [[ "$(grep -c ' ready' "$MESH_DIR.mesh.log" 2>/dev/null || true)" -ge "$count" ]] && break
  done
  mapfile -t pids < <(python3 -c "import json; print('\n'.join(str(p) for p in json.load(open('.mesh/cluster.json'))['node_pids'].values()))")
  local before=() after=() rss=()
  for pid in "${pids[@]}"; do before+=("$(awk '{print $14 + $15}' "/proc/$pid/stat")"); done
  "$BOT_BIN" --regions "$dir" --area "$area" --rate "$((PER_REGION * count))" --concurrency 64 --duration "$DURATION" \
    >"$MESH_DIR.bot.log" 2>&1 || true
  for pid in "${pids[@]}"; do
    after+=("$(awk '{print $14 + $15}' "/proc/$pid/stat")")
    rss+=("$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")")
  done
  kill -TERM "$mesh" 2>/dev/null || true   # INT is ignored by background jobs
  wait "$mesh" 2>/dev/null || true
  local accepted
  accepted="$(grep -oE 'accepted +[0-9]+' "$MESH_DIR.bot.log" | head -n 1 | grep -oE '[0-9]+' || echo 0)"
  python3 - "$count" "$accepted" "$(getconf CLK_TCK)" "${before[*]}" "${after[*]}" "${rss[*]}" <<'EOF'
import statistics, sys
count, accepted, tck = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
before, after, rss = (list(map(int, a.split())) for a in sys.argv[4:7])
cpu = [(b - a) / tck for a, b in zip(before, after)]
mib = [r / 1024 for r in rss]
print(count, f"{statistics.median(cpu):.2f}", f"{max(cpu):.2f}",
      f"{statistics.median(mib):.0f}", f"{max(mib):.0f}", accepted)
EOF
}

mkdir -p "$MESH_DIR"
rm -rf "$MESH_DIR/grid9"
BBOX="${BBOX:-23.60,90.30,24.11,91.05}"
"$NODE_BIN" regions grid --rows 3 --cols 3 --bbox "$BBOX" --out "$MESH_DIR/grid9" >/dev/null
echo "per region: $PER_REGION requests/s for $DURATION"
three="$(run regions 23.60,90.30,23.95,90.55)"
nine="$(run "$MESH_DIR/grid9" "$BBOX")"
python3 - "$three" "$nine" <<'EOF'
import sys
rows = [r.split() for r in sys.argv[1:]]
print("| regions | node CPU s (median / max) | node RSS MiB (median / max) | accepted |")
print("| --- | --- | --- | --- |")
for n, cm, cx, rm, rx, acc in rows:
    print(f"| {n} | {cm} / {cx} | {rm} / {rx} | {acc} |")
(_, c3, _, r3, _, _), (_, c9, _, r9, _, _) = rows
print(f"nine/three, per node: CPU {float(c9) / float(c3):.2f}x, RSS {float(r9) / float(r3):.2f}x")
EOF
