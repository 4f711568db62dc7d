#!/usr/bin/env bash
# Region failover on the local three-region mesh (release build, the
# regions' own addresses): the bot's riders and drivers crowd one spot deep
# inside a region (all within 50 m of each other) and post to the OTHER
# regions' endpoints, which redirect to the region that serves the spot. Each
# run kills every node of the region with kill -9, keeps them down, starts
# them again on their data folders, and measures from the bot's log of every
# post (--post-log):
#
#   first 202   seconds from the kill to the first post answered 202 by a
#               node of another region (the adopter)
#   accepted    of the posts sent from then until the restart, the share
#               answered 202
#   matched     of the riders among those, the share in a committed match
#   home        seconds from the region's nodes being ready again (in sync
#               with their peers) until the spot's posts are accepted by
#               them: the first one, and every one (after the adopter's
#               last, i.e. its hand-back)
#   safety      the chaos checker (bot check, scripts/lib/history-lib.sh):
#               nobody in two committed matches, every node back in step,
#               no accepted request lost
#
# then the medians over the runs, against the targets: first 202 within 15 s
# of the kill, >= 99% of posts 202 and >= 90% of those riders matched, every
# post home within 20 s of ready.
#
#   scripts/bench-failover.sh [options] [-- bot flags...]
#
#   --runs N            runs, each on a fresh mesh (default 3)
#   --region R          the region killed (default: the first, dhaka-north)
#   --at LAT,LON        the spot (default: the middle of R's bounding box)
#   --riders N          riders, and as many drivers (default 20)
#   --warmup D          traffic before the kill (default 8s)
#   --down D            how long R stays down (default 40s)
#   --after D           traffic once R is ready again (default 25s)
#   --adopt-after D     the nodes' --adopt-after (default 10s)
#   --handback-after D  the nodes' --handback-after (default 5s)
#   --request-ttl D     the nodes' --request-ttl (default 6s). The bot's riders
#                       and drivers wait for the match of an accepted request
#                       until it expires, also when its node is dead: those
#                       the killed region accepted last post again only once
#                       their requests expired, so the TTL (plus 2 s of grace)
#                       must be shorter than the adoption for the bot to be
#                       posting when the area is adopted
#
# A running scripts/mesh.sh must be stopped first. State goes to $MESH_DIR
# (default .mesh/bench-failover): the mesh, results.jsonl (one line of
# figures per run) and run-N/ with each run's history: posts.jsonl (every
# post), told.jsonl, matches.json, partitions.jsonl (the kill, the restart,
# ready), convergence.jsonl, bot.log, check.txt (the checker's report).
set -euo pipefail
cd "$(dirname "$0")/.."
MESH_DIR="${MESH_DIR:-.mesh/bench-failover}"
source scripts/lib/mesh-lib.sh
source scripts/lib/history-lib.sh

RUNS=3 REGION="" AT="" RIDERS=20 WARMUP=8 DOWN=40 AFTER=25 ADOPT_AFTER=10s HANDBACK_AFTER=5s TTL=6s
flag() { return 1; }
option() {
  case "$1" in
    --runs) RUNS="$2" ;;
    --region) REGION="$2" ;;
    --at) AT="$2" ;;
    --riders) RIDERS="$2" ;;
    --warmup) WARMUP="$(dur_secs "$2")" ;;
    --down) DOWN="$(dur_secs "$2")" ;;
    --after) AFTER="$(dur_secs "$2")" ;;
    --adopt-after) ADOPT_AFTER="$2" ;;
    --handback-after) HANDBACK_AFTER="$2" ;;
    --request-ttl) TTL="$2" ;;
    *) return 1 ;;
  esac
}
mesh_parse_args "$@"
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || die "--runs must be a positive number"
[[ "$RIDERS" =~ ^[1-9][0-9]*$ ]] || die "--riders must be a positive number"
RESULTS="$MESH_DIR/results.jsonl"

cleanup() {
  trap - INT TERM EXIT
  bot_kill
  mesh_stop_all
}
trap 'log "interrupted: stopping everything"; cleanup; exit 130' INT
trap 'log "terminated: stopping everything"; cleanup; exit 143' TERM
trap cleanup EXIT

# The 50 m square around the spot (--at, or the middle of the region's
# bounding box), as the bot's --area.
spot_area() {
  python3 - "$REGIONS_DIR/$REGION.json" "$AT" <<'EOF'
import json, math, sys
path, at = sys.argv[1:3]
if at:
    lat, lon = (float(x) for x in at.split(","))
else:
    ring = json.load(open(path))["area"]["coordinates"][0]
    lons, lats = [p[0] for p in ring], [p[1] for p in ring]
    lat, lon = (min(lats) + max(lats)) / 2, (min(lons) + max(lons)) / 2
half_lat = 0.025 / 111.2
half_lon = half_lat / math.cos(math.radians(lat))
print(f"{lat - half_lat:.6f},{lon - half_lon:.6f},{lat + half_lat:.6f},{lon + half_lon:.6f}")
EOF
}

# The figures of the run in HISTORY_DIR, as one JSON line (see the header).
# Arguments: the check's verdict (true/false), then the region's node ids.
figures() {
  python3 - "$HISTORY_DIR" "$@" <<'EOF'
import json, sys
folder, safe, home = sys.argv[1], sys.argv[2] == "true", set(sys.argv[3:])
lines = lambda name: [json.loads(l) for l in open(f"{folder}/{name}") if l.strip()]
posts = sorted(lines("posts.jsonl"), key=lambda p: p["sent_at"])
outage = [p for p in lines("partitions.jsonl") if "ready" in p][-1]
kill, restart, ready = outage["start"], outage["end"], outage["ready"]
matched = {m["rider_id"] for node in json.load(open(f"{folder}/matches.json"))["nodes"].values()
           for m in node.values()}
ok = lambda p: p["status"] == 202
away = lambda p: ok(p) and p["node"] not in home
out = {"safe": safe}
first = min((p["answered_at"] for p in posts if p["sent_at"] >= kill and away(p)), default=None)
if first is not None:
    out["first_202_s"] = round(first - kill, 2)
    window = [p for p in posts if first <= p["sent_at"] < restart]
    riders = [p for p in window if ok(p) and p["role"] == "rider"]
    out["posts"] = len(window)
    out["accepted"] = round(sum(map(ok, window)) / max(len(window), 1), 4)
    out["riders"] = len(riders)
    out["matched"] = round(sum(p["id"] in matched for p in riders) / max(len(riders), 1), 4)
after = [p for p in posts if p["sent_at"] >= restart]
last_away = max((p["answered_at"] for p in after if away(p)), default=restart)
at_home = [p["answered_at"] for p in after if ok(p) and p["node"] in home]
if at_home:
    out["home_first_s"] = round(min(at_home) - ready, 2)
    settled = [t for t in at_home if t > last_away]
    if settled:
        out["home_all_s"] = round(min(settled) - ready, 2)
print(json.dumps(out))
EOF
}

# One line of a run's figures, or of the medians.
describe() {
  python3 - "$@" <<'EOF'
import json, statistics, sys
label, rows = sys.argv[1], [json.loads(r) for r in sys.argv[2:]]
def med(key, scale=1, unit="", digits=1):
    values = [r[key] * scale for r in rows if key in r]
    if not values:
        return "n/a"
    return f"{statistics.median(values):.{digits}f}{unit}"
safe = sum(r["safe"] for r in rows)
print(f"{label}: first 202 {med('first_202_s', unit=' s')} after the kill (target <= 15 s); "
      f"then {med('posts', digits=0)} posts, {med('accepted', 100, '%')} answered 202 (>= 99%), "
      f"{med('riders', digits=0)} riders, {med('matched', 100, '%')} of them matched (>= 90%); "
      f"home {med('home_first_s', unit=' s')} after ready (first post), "
      f"{med('home_all_s', unit=' s')} (every post; <= 20 s); "
      f"safety {'ok' if safe == len(rows) else 'VIOLATED'}"
      + (f" in {safe}/{len(rows)} runs" if len(rows) > 1 else ""))
EOF
}

# run N: a fresh mesh, the bot at the spot, the outage, the check, the
# figures (appended to RESULTS and printed).
run() {
  local n="$1" endpoints=() home=() i safe=true line
  HISTORY_DIR="$MESH_DIR/run-$n"
  rm -rf "$HISTORY_DIR"
  history_files
  history_fresh
  echo "== run $n of $RUNS"
  mesh_up
  for i in "${!REGION_IDS[@]}"; do
    mesh_wait_ready "${REGION_IDS[i]}"
    [[ "${REGION_IDS[i]}" == "$REGION" ]] || endpoints+=(--endpoint "${REGION_HTTP[i]}")
  done
  for i in "${!NODE_IDS[@]}"; do
    if [[ "${NODE_REGION[i]}" == "$REGION" ]]; then home+=("${NODE_IDS[i]}"); fi
  done
  bot_start "${endpoints[@]}" --area "$AREA" --riders "$RIDERS" --drivers "$RIDERS" \
    --post-log "$HISTORY_DIR/posts.jsonl" --settle "$(( $(dur_secs "$TTL") + 10 ))s" "${BOT_ARGS[@]}"
  pause "$WARMUP"
  region_outage "$REGION" "$DOWN"
  echo "-- traffic for ${AFTER} s more"
  pause "$AFTER"
  history_finish >"$HISTORY_DIR/check.txt" 2>&1 || safe=false
  mesh_stop_all
  if [[ "$safe" == false ]]; then
    log "run $n: the check found violations:"
    cat "$HISTORY_DIR/check.txt" >&2
  fi
  line="$(figures "$safe" "${home[@]}")"
  echo "$line" >>"$RESULTS"
  echo "raw: $line"
  describe "run $n" "$line"
}

mesh_plan
[[ -n "$REGION" ]] || REGION="${REGION_IDS[0]}"
[[ " ${REGION_IDS[*]} " == *" $REGION "* ]] || die "--region: no region $REGION (regions: ${REGION_IDS[*]})"
(( ${#REGION_IDS[@]} >= 2 )) || die "failover needs at least two regions"
NODE_EXTRA+=(--adopt-after "$ADOPT_AFTER" --handback-after "$HANDBACK_AFTER" --request-ttl "$TTL")
AREA="$(spot_area)"
echo "failover: $REGION killed ${WARMUP} s into each run, down ${DOWN} s, then ${AFTER} s more;" \
  "$RIDERS riders and $RIDERS drivers in $AREA; adopt after $ADOPT_AFTER, hand back after $HANDBACK_AFTER," \
  "request TTL $TTL"
rm -f "$RESULTS"
for (( n = 1; n <= RUNS; n++ )); do run "$n"; done
mapfile -t rows <"$RESULTS"
describe "medians over $RUNS runs" "${rows[@]}"
