# shellcheck shell=bash
# The local mesh, as functions shared by scripts/mesh.sh and scripts/chaos.sh:
# thin wrappers over the `devcluster` binary (scripts/devcluster), the one
# launcher the integration tests use too, plus what only the scripts need
# (durations, flags, stopping the bot). Source it from the repository root,
# under `set -euo pipefail`.
#
# Settings (set before calling mesh_plan; the defaults suit mesh.sh):
#   MESH_DIR        state: certs, one folder per node, relay and nginx files
#   MESH_BIN        folder holding the node, bot and devcluster binaries (default: the
#                   release folder of $CARGO_TARGET_DIR, else target/release,
#                   built on start)
#   MESH_REPLICAS   nodes per region; above 1, nginx fronts each region
#   MESH_WAN        1: cross-region QUIC goes through `node wan-relay`
#   MESH_WAN_DELAY  one-way delay for every pair (empty: from the distance)
#   MESH_WAN_JITTER, MESH_WAN_LOSS
#   NODE_EXTRA      array of flags added to every node's command line
#   NODE_WRAP       array, by node index: a command the node runs under
#                   (e.g. "env LD_PRELOAD=<libfaketime> FAKETIME=+3s" to shift its clock)
#   MESH_ADMIN_OFFSET  a node's operator listener (map, /debug/state,
#                   /metrics, /matches) is its HTTP port plus this (100: the
#                   north's map is on :8181); replicas take free ports
#
# Every process of the mesh is tracked by pid (devcluster records them in
# $MESH_DIR/cluster.json, and each node's in $MESH_DIR/pids/<id>.pid) and
# stopped by mesh_stop_all; nothing is ever killed by name.

MESH_DIR="${MESH_DIR:-.mesh}"
# Where `cargo build --release` puts them, so that a shared target folder
# (CARGO_TARGET_DIR) is built and used, not a stale target/release.
CARGO_RELEASE="${CARGO_TARGET_DIR:-target}/release"
MESH_BIN="${MESH_BIN:-$CARGO_RELEASE}"
MESH_REPLICAS="${MESH_REPLICAS:-1}"
MESH_WAN="${MESH_WAN:-0}"
MESH_WAN_DELAY="${MESH_WAN_DELAY:-}"
MESH_WAN_JITTER="${MESH_WAN_JITTER:-5ms}"
MESH_WAN_LOSS="${MESH_WAN_LOSS:-0.01}"
# Shipped regions are a few km apart, so computed delays are floored here.
MESH_WAN_MIN_MS="${MESH_WAN_MIN_MS:-20}"
MESH_ADMIN_OFFSET="${MESH_ADMIN_OFFSET:-100}"
REGIONS_DIR="${REGIONS_DIR:-regions}"
NODE_BIN="$MESH_BIN/node"
BOT_BIN="$MESH_BIN/bot"
[[ -v NODE_EXTRA ]] || NODE_EXTRA=()
[[ -v NODE_WRAP ]] || NODE_WRAP=()

# The launcher: plans, starts, inspects and stops the mesh
# (scripts/devcluster); its state is $MESH_DIR/cluster.json.
DEVCLUSTER_BIN="$MESH_BIN/devcluster"
DEVCLUSTER=("$DEVCLUSTER_BIN" --dir "$MESH_DIR")

# The script's header comment, from its second line to `set -euo`.
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-0}"; }

# The command line of mesh.sh and chaos.sh: `--flag=value` is `--flag value`;
# -h/--help prints the script's usage(); after `--` the rest is BOT_ARGS.
# The script defines `flag NAME` and `option NAME VALUE`, each returning
# non-zero for a name it does not know.
mesh_parse_args() {
  BOT_ARGS=()
  while (( $# )); do
    if [[ "$1" == --*=* ]]; then set -- "${1%%=*}" "${1#*=}" "${@:2}"; fi
    case "$1" in
      -h|--help) usage ;;
      --) shift; BOT_ARGS=("$@"); return 0 ;;
    esac
    if flag "$1"; then shift; continue; fi
    if (( $# >= 2 )) && option "$1" "$2"; then shift 2; continue; fi
    if (( $# < 2 )) && (option "$1" 0) 2>/dev/null; then die "$1 needs a value"; fi
    echo "unknown option: $1" >&2
    usage 2
  done
}

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- durations ----------------------------------------------------------------

# "30s", "2m", "1h", "1500ms" or plain seconds -> whole seconds (at least 1
# for any positive input).
dur_secs() {
  [[ "$1" =~ ^([0-9]+)(ms|s|m|h)?$ ]] || die "cannot read duration '$1' (use e.g. 30s, 2m, 1h)"
  local n="${BASH_REMATCH[1]}"
  case "${BASH_REMATCH[2]}" in
    ms) echo $(( (n + 999) / 1000 )) ;;
    m) echo $(( n * 60 )) ;;
    h) echo $(( n * 3600 )) ;;
    *) echo "$n" ;;
  esac
}

# has_flag --name ARGS...: whether ARGS contain --name or --name=...
has_flag() {
  local name="$1" a
  shift
  for a in "$@"; do [[ "$a" == "$name" || "$a" == "$name="* ]] && return 0; done
  return 1
}

# --- processes -----------------------------------------------------------------

# alive PID: running and not a zombie (from /proc: CI images may lack ps).
alive() {
  local stat
  [[ -n "$1" ]] && stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }"   # the state follows "(comm) "
  [[ "${stat%% *}" != Z ]]
}

# stop_pids SIGNAL SECONDS PID...: signal, wait up to SECONDS, then SIGKILL
# whatever is left, and reap our children.
stop_pids() {
  local sig="$1" secs="$2" pid left i
  shift 2
  (( $# )) || return 0
  for pid in "$@"; do kill "-$sig" "$pid" 2>/dev/null || true; done
  for (( i = 0; i < secs * 10; i++ )); do
    left=0
    for pid in "$@"; do alive "$pid" && left=1; done
    (( left )) || break
    sleep 0.1
  done
  for pid in "$@"; do
    if alive "$pid"; then
      log "pid $pid did not stop after SIG$sig in ${secs}s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
}

# --- the mesh, through devcluster ------------------------------------------------

# Reads the mesh's description from devcluster into REGION_IDS, REGION_HTTP
# (each region's public URL, nginx's with replicas), NODE_IDS,
# NODE_REGION, NODE_QUIC, NODE_PID, NODE_URLS (ID=URL of each admin listener,
# for `bot check`), RELAY_KEYS ("i>j": node i reaches node j through it) and
# RELAY_PID[key].
mesh_load() {
  local env
  env="$("${DEVCLUSTER[@]}" env)" || die "devcluster env failed"
  eval "$env"
}

# Lays the mesh out (nodes, ports; relays and their delays with MESH_WAN=1)
# and refuses to start over another mesh (e.g. scripts/mesh.sh while
# chaos.sh runs): the regions' addresses must be free. One-way delay per
# pair of regions: see `devcluster plan --help`.
MESH_PLANNED=0
mesh_plan() {
  local args=(plan --node-bin "$NODE_BIN" --regions "$REGIONS_DIR" --replicas "$MESH_REPLICAS"
              --admin-offset "$MESH_ADMIN_OFFSET")
  mesh_need_binaries
  if (( MESH_WAN )); then
    args+=(--wan --wan-jitter "$MESH_WAN_JITTER" --wan-loss "$MESH_WAN_LOSS" --wan-min-ms "$MESH_WAN_MIN_MS")
    [[ -n "$MESH_WAN_DELAY" ]] && args+=(--wan-delay "$MESH_WAN_DELAY")
  fi
  "${DEVCLUSTER[@]}" "${args[@]}" || exit 1
  MESH_PLANNED=1
  mesh_load
}

# --- binaries --------------------------------------------------------------------

# Once per run: mesh_plan needs the node (to read the regions), mesh_up both.
BINARIES_READY=0
mesh_need_binaries() {
  (( BINARIES_READY )) && return 0
  if [[ "$MESH_BIN" == "$CARGO_RELEASE" ]]; then
    # Always: a no-op when up to date, and never a stale binary after a pull.
    log "building the node, the bot and devcluster (release)"
    cargo build --release --locked -p node -p bot -p devcluster
  fi
  [[ -x "$NODE_BIN" && -x "$BOT_BIN" && -x "$DEVCLUSTER_BIN" ]] ||
    die "no node/bot/devcluster binaries in $MESH_BIN"
  if (( MESH_WAN )) && ! "$NODE_BIN" wan-relay --help >/dev/null 2>&1; then
    die "$NODE_BIN has no 'wan-relay' subcommand yet; rebuild it (cargo build --release --locked -p node)"
  fi
  "$NODE_BIN" regions --help >/dev/null 2>&1 ||
    die "$NODE_BIN has no 'regions' subcommand yet; rebuild it (cargo build --release --locked -p node)"
  BINARIES_READY=1
}

# --- everything ---------------------------------------------------------------

# Where each region listens: the public API and, per node, the operator
# listener (the map at its root); the WAN's delays.
mesh_print_layout() { "${DEVCLUSTER[@]}" layout; }

# `devcluster up` and its flags for NODE_WRAP (node i runs under
# NODE_WRAP[i]), into UP_ARGS.
mesh_up_args() {
  local i
  UP_ARGS=(up)
  for i in "${!NODE_WRAP[@]}"; do UP_ARGS+=(--wrap "${NODE_IDS[i]}=${NODE_WRAP[i]}"); done
}

# Certificates, relays, nodes (ready), nginx; NODE_EXTRA for every node,
# NODE_WRAP[i] around node i.
mesh_up() {
  mesh_up_args
  "${DEVCLUSTER[@]}" "${UP_ARGS[@]}" -- "${NODE_EXTRA[@]}" || exit 1
  mesh_load
}

# As mesh_up, with devcluster staying on as the nodes' parent
# (`up --supervise`): a node that exits is reported on stderr with its exit
# status, its log and the command that starts it again, and the others keep
# running; with $1 (seconds), the supervisor starts a dead node again after
# that long. It runs in a process group of its own (set -m), so that Ctrl-C
# reaches only the script, which stops its bot before the mesh
# (mesh_stop_all).
SUPERVISOR_PID=""
mesh_up_supervised() {
  local ready="$MESH_DIR/supervisor.ready"
  mesh_up_args
  UP_ARGS+=(--supervise --ready-file "$ready")
  [[ -n "${1:-}" ]] && UP_ARGS+=(--restart-dead "$1")
  set -m
  "${DEVCLUSTER[@]}" "${UP_ARGS[@]}" -- "${NODE_EXTRA[@]}" &
  SUPERVISOR_PID=$!
  set +m
  until [[ -s "$ready" ]]; do
    if ! alive "$SUPERVISOR_PID"; then
      wait "$SUPERVISOR_PID" 2>/dev/null || true
      SUPERVISOR_PID=""
      die "devcluster up failed"
    fi
    sleep 0.2
  done
  mesh_load
}

# Whether the supervisor that mesh_up_supervised started still runs.
mesh_supervised() { [[ -n "$SUPERVISOR_PID" ]] && alive "$SUPERVISOR_PID"; }

# Starts node i again (after a kill) and waits until it is ready.
mesh_restart_node() {
  "${DEVCLUSTER[@]}" start-node "${NODE_IDS[$1]}" || exit 1
  mesh_load
}

# Kills every node of region $1 with SIGKILL, a region outage (a supervisor
# does not start them again), and reloads NODE_PID (theirs are empty).
mesh_kill_region() {
  "${DEVCLUSTER[@]}" kill-region "$1" >&2 || exit 1
  mesh_load
}

# Starts every node of region $1 again on its data folder, and waits until
# each is ready.
mesh_restart_region() {
  "${DEVCLUSTER[@]}" start-region "$1" >&2 || exit 1
  mesh_load
}

# Waits until every node of region $1 says it is ready in /debug/state (in
# sync with its peers, deciding), for at most $2 seconds (default 60).
mesh_wait_ready() {
  local region="$1" limit="${2:-60}" i url
  local deadline=$(( SECONDS + limit ))
  for i in "${!NODE_IDS[@]}"; do
    [[ "${NODE_REGION[i]}" == "$region" ]] || continue
    url="${NODE_URLS[i]#*=}/debug/state"
    until curl -fsS --max-time 1 "$url" 2>/dev/null | grep -q '"ready":true'; do
      (( SECONDS < deadline )) || die "node ${NODE_IDS[i]} not ready within ${limit}s"
      sleep 0.1
    done
  done
}

mesh_status() { "${DEVCLUSTER[@]}" status || true; }

# Stops nodes, relays and nginx of the mesh this shell planned (the caller
# stops its own extras, e.g. the bot, first): through the supervisor when
# there is one (it stops the mesh on SIGTERM), then whatever is left.
mesh_stop_all() {
  (( MESH_PLANNED )) || return 0
  if [[ -n "$SUPERVISOR_PID" ]]; then
    stop_pids TERM 30 "$SUPERVISOR_PID"
    SUPERVISOR_PID=""
  fi
  "${DEVCLUSTER[@]}" down || log "devcluster down failed"
}
