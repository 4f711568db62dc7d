#!/usr/bin/env bash
# Runs the regions of regions/ as a local mesh on this machine, one node per
# region (or N behind nginx), every node peered with every other over QUIC,
# and the bot in simulation mode against it; prints where everything listens
# (each node's public API and its admin listener, where the map is) and,
# every few seconds, one line per node from /debug/state. A node that exits
# (a crash, or `kill -9` to show a region outage) is reported with its exit
# status, its log and the command that starts it again, and the other nodes
# keep running. Ctrl-C stops everything it started, and nothing else.
#
#   scripts/mesh.sh [options] [-- bot flags...]
#
#   --no-bot          start no bot
#   --regions DIR     the region files to run (default regions/; e.g. a layout
#                     from `node regions grid --rows 3 --cols 3 --out DIR`)
#   --replicas N      N nodes per region (ids <region>-1..N) on free ports; nginx
#                     listens on the region's HTTP port and balances over them
#   --wan             cross-region QUIC through `node wan-relay` (delay, jitter,
#                     loss per pair of nodes in different regions)
#   --wan-delay D     one-way delay for every pair (default: from the distance
#                     between the regions' centroids, at least 20ms); implies --wan
#   --wan-jitter D    default 5ms; implies --wan
#   --wan-loss P      datagram loss probability, default 0.01; implies --wan
#   --cql             start scripts/cql-cluster.sh first; nodes keep ratings there
#   --prometheus      start Debian's `prometheus` binary on a free loopback port,
#                     scraping every node's admin listener (/metrics) every 2s
#                     (PROMETHEUS_INTERVAL) and evaluating deploy/prometheus/rules.yml;
#                     prints its URL (its alerts page: /alerts)
#   --duration D      stop after D (30s, 2m, ...); default: until Ctrl-C
#   --restart-dead D  start a node that exits on its own again after D (5s,
#                     ...); default: report it and leave it down
#   --outage R:AT:FOR a region outage: AT after the start (e.g. 20s), kill -9
#                     every node of region R, and start them again FOR later
#                     on the same data folders (e.g. dhaka-north:20s:30s)
#
# State goes to $MESH_DIR (default .mesh): cluster.json (the layout and the
# pids, kept by scripts/devcluster, which starts and supervises the mesh),
# pids/<node>.pid (each running node's pid), certs/ (the mesh CA and the
# token key, made on first run), one folder per node (data/, node.log,
# ready.json), wan/ and nginx/ logs, bot.log and bot-summary.json; with
# --prometheus, prometheus.yml (the generated scrape configuration),
# prometheus/ (its storage), prometheus.log and prometheus.url. Node
# flags can be set through the environment (NODE_REQUEST_TTL=60s,
# NODE_MATCH_RETENTION=15m, ...; see `node --help`). MESH_STATUS_EVERY sets
# the status period in seconds (5).
#
# From another terminal, while it runs (DC=target/release/devcluster):
#   kill -9 "$(cat .mesh/pids/dhaka-north.pid)"   one node dies (reported;
#                                    --restart-dead starts it again)
#   $DC --dir .mesh kill-region dhaka-north       the whole region, by kill -9
#   $DC --dir .mesh start-region dhaka-north      back, on the same data folders
#   $DC --dir .mesh start-node dhaka-north        one node back
#
# Examples:
#   scripts/mesh.sh -- --riders 200 --drivers 200
#   scripts/mesh.sh --replicas 2 --duration 30s
#   scripts/mesh.sh --wan --no-bot
#   scripts/mesh.sh --outage dhaka-north:20s:30s --duration 90s
#   scripts/mesh.sh --prometheus --no-bot   then kill -9 a node: RideNodeDown
#                                    goes pending, then firing after its for: (30s)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/mesh-lib.sh
source scripts/lib/prometheus-lib.sh

BOT=1 CQL=0 PROMETHEUS=0 DURATION="" RESTART_DEAD="" OUTAGE=""
STATUS_EVERY="${MESH_STATUS_EVERY:-5}"
flag() {
  case "$1" in
    --no-bot) BOT=0 ;;
    --cql) CQL=1 ;;
    --prometheus) PROMETHEUS=1 ;;
    --wan) MESH_WAN=1 ;;
    *) return 1 ;;
  esac
}
option() {
  case "$1" in
    --regions) REGIONS_DIR="$2" ;;
    --replicas) MESH_REPLICAS="$2" ;;
    --wan-delay) MESH_WAN=1 MESH_WAN_DELAY="$2" ;;
    --wan-jitter) MESH_WAN=1 MESH_WAN_JITTER="$2" ;;
    --wan-loss) MESH_WAN=1 MESH_WAN_LOSS="$2" ;;
    --duration) DURATION="$(dur_secs "$2")" ;;
    --restart-dead) RESTART_DEAD="$(dur_secs "$2")" ;;
    --outage) OUTAGE="$2" ;;
    *) return 1 ;;
  esac
}
mesh_parse_args "$@"
[[ "$MESH_REPLICAS" =~ ^[1-9][0-9]*$ ]] || die "--replicas must be a positive number"
OUTAGE_REGION="" OUTAGE_AT="" OUTAGE_END="" OUTAGE_STATE=none
if [[ -n "$OUTAGE" ]]; then
  IFS=: read -r OUTAGE_REGION at for <<<"$OUTAGE"
  [[ -n "$OUTAGE_REGION" && -n "${at:-}" && -n "${for:-}" ]] ||
    die "--outage is REGION:AT:FOR, e.g. dhaka-north:20s:30s"
  OUTAGE_AT="$(dur_secs "$at")"
  OUTAGE_END=$(( OUTAGE_AT + $(dur_secs "$for") ))
  OUTAGE_STATE=pending
fi

BOT_PID=""
CQL_STARTED=()   # cql-cluster node numbers this run started (stopped at exit)

stop_cql() {
  local n
  for n in "${CQL_STARTED[@]}"; do
    scripts/cql-cluster.sh stop-node "$n" >/dev/null 2>&1 || log "could not stop CQL node $n"
  done
  CQL_STARTED=()
}

cleanup() {
  trap - INT TERM EXIT
  # The bot first (SIGINT: it drains and prints its summary), then the mesh.
  [[ -n "$BOT_PID" ]] && stop_pids INT 15 "$BOT_PID"
  BOT_PID=""
  prometheus_stop
  mesh_stop_all
  stop_cql
}
trap 'log "interrupted: stopping everything"; cleanup; exit 130' INT
trap 'log "terminated: stopping everything"; cleanup; exit 143' TERM
trap cleanup EXIT

# Ratings in the local CQL cluster. `up` starts only the nodes not running
# and says "node N already running" for the others; only the ones it
# started are stopped at exit.
start_cql() {
  local out n
  log "starting the CQL cluster (scripts/cql-cluster.sh up; log: $MESH_DIR/cql-up.log)"
  mkdir -p "$MESH_DIR"
  out="$(scripts/cql-cluster.sh up 2>"$MESH_DIR/cql-up.log")" ||
    die "scripts/cql-cluster.sh up failed:
$(tail -n 20 "$MESH_DIR/cql-up.log")"
  for n in $(seq "${#REGION_IDS[@]}"); do
    grep -q "node $n already running" "$MESH_DIR/cql-up.log" || CQL_STARTED+=("$n")
  done
  out="$(sed -n 's/^CQL_NODES=//p' <<<"$out" | tail -n 1)"
  [[ -n "$out" ]] || die "scripts/cql-cluster.sh up printed no CQL_NODES="
  log "CQL cluster: $out"
  NODE_EXTRA+=(--cql-nodes "$out")
}

# --outage: the region's nodes die at OUTAGE_AT seconds into the run and
# start again at OUTAGE_END. Sets OUTAGE_NEXT to the seconds until the next
# step (empty once over).
outage_step() {
  local t=$(( SECONDS - started ))
  case "$OUTAGE_STATE" in
    pending)
      if (( t >= OUTAGE_AT )); then
        log "outage: kill -9 every node of $OUTAGE_REGION"
        mesh_kill_region "$OUTAGE_REGION"
        OUTAGE_STATE=down
      fi ;;
    down)
      if (( t >= OUTAGE_END )); then
        log "outage over: starting the nodes of $OUTAGE_REGION again"
        mesh_restart_region "$OUTAGE_REGION"
        OUTAGE_STATE=over
      fi ;;
  esac
  t=$(( SECONDS - started ))
  case "$OUTAGE_STATE" in
    pending) OUTAGE_NEXT=$(( OUTAGE_AT - t )) ;;
    down) OUTAGE_NEXT=$(( OUTAGE_END - t )) ;;
    *) OUTAGE_NEXT="" ;;
  esac
}

mesh_plan
if [[ -n "$OUTAGE_REGION" && " ${REGION_IDS[*]} " != *" $OUTAGE_REGION "* ]]; then
  die "--outage: no region $OUTAGE_REGION (regions: ${REGION_IDS[*]})"
fi
(( CQL )) && start_cql
mesh_up_supervised "$RESTART_DEAD"
mesh_print_layout
if (( PROMETHEUS )); then
  prometheus_start
  prometheus_print
fi

if (( BOT )); then
  bot=("$BOT_BIN" --regions "$REGIONS_DIR")
  has_flag --summary-json "${BOT_ARGS[@]}" || bot+=(--summary-json "$MESH_DIR/bot-summary.json")
  bot+=("${BOT_ARGS[@]}")
  echo "bot: ${bot[*]} (progress and warnings: $MESH_DIR/bot.log)"
  "${bot[@]}" 2>"$MESH_DIR/bot.log" &
  BOT_PID=$!
fi
echo "status every ${STATUS_EVERY}s${DURATION:+ for ${DURATION}s}; Ctrl-C stops everything"

started=$SECONDS
last_status=$SECONDS
while :; do
  nap=$(( last_status + STATUS_EVERY - SECONDS ))
  if [[ -n "$DURATION" ]]; then
    left=$(( started + DURATION - SECONDS ))
    (( left > 0 )) || break
    (( left < nap )) && nap=$left
  fi
  outage_step
  [[ -n "$OUTAGE_NEXT" ]] && (( OUTAGE_NEXT < nap )) && nap=$OUTAGE_NEXT
  (( nap > 0 )) && sleep "$nap"
  if (( SECONDS - last_status >= STATUS_EVERY )); then
    mesh_status
    last_status=$SECONDS
  fi
  # Dead nodes are the supervisor's to report; without it nothing is.
  mesh_supervised || die "the supervisor (devcluster up --supervise) exited; the mesh is stopping"
  if [[ -n "$PROMETHEUS_PID" ]] && ! prometheus_running; then
    log "Prometheus exited (log: $MESH_DIR/prometheus.log); the mesh keeps running"
    PROMETHEUS_PID=""
  fi
  if [[ -n "$BOT_PID" ]] && ! alive "$BOT_PID"; then
    status=0; wait "$BOT_PID" || status=$?
    BOT_PID=""
    log "the bot finished (exit status $status); the mesh keeps running"
  fi
done

# --duration is over: stop the bot ourselves to learn how it went.
status=0
if [[ -n "$BOT_PID" ]]; then
  kill -INT "$BOT_PID" 2>/dev/null || true
  wait "$BOT_PID" || status=$?
  BOT_PID=""
fi
cleanup
(( status == 0 )) || die "the bot failed (exit status $status); see $MESH_DIR/bot.log"
echo "done"
