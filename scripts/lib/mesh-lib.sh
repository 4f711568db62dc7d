# shellcheck shell=bash
# The local mesh, as functions shared by scripts/mesh.sh and scripts/chaos.sh.
# Source it from the repository root, under `set -euo pipefail`.
#
# Settings (set before calling mesh_plan; the defaults suit mesh.sh):
#   MESH_DIR        state: certs, one folder per node, relay and nginx files
#   MESH_BIN        folder holding the node and bot binaries (default: the
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
# Every process started here is tracked by pid and stopped by mesh_stop_all;
# nothing is ever killed by name.

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

MESHPY=(python3 scripts/lib/mesh.py)

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

# --- plan: regions, nodes, ports, relays --------------------------------------

# `node regions distances` lines (a, b, km between centroids) -> a, b, km
# (to 0.1), the computed one-way delay in ms (to 0.1) and the whole ms used
# (at least MESH_WAN_MIN_MS): 5 us/km in fibre, doubled for real routes,
# plus 10 ms for a few hops. awk's %.0f rounds half to even.
wan_delays() {
  awk -F'\t' -v OFS='\t' -v min="$MESH_WAN_MIN_MS" '{
    ms = $3 * 5.0 * 2.0 / 1000.0 + 10.0
    used = sprintf("%.0f", ms) + 0
    if (used < min) used = min
    printf "%s\t%s\t%.1f\t%.1f\t%d\n", $1, $2, $3, ms, used
  }'
}

# Fills REGION_IDS, REGION_HTTP[id], REGION_QUIC[id], and the node table:
# NODE_IDS[i], NODE_REGION[i], NODE_HTTP[i], NODE_ADMIN[i], NODE_QUIC[i]
# (host:port).
# With MESH_WAN=1 also RELAY_KEYS ("i>j": node i reaches node j through it),
# RELAY_ADDR[key], RELAY_DELAY[key]. One-way delay per pair of regions: the
# great-circle distance between their areas' centroids at 5 us/km, doubled
# for real routes, plus 10 ms; at least MESH_WAN_MIN_MS (the shipped regions
# are all in Dhaka, a few km apart), or MESH_WAN_DELAY for every pair.
mesh_plan() {
  local rows id http quic r k ports=() n i j
  REGION_IDS=()
  declare -gA REGION_HTTP=() REGION_QUIC=() RELAY_ADDR=() RELAY_DELAY=() RELAY_PID=()
  declare -gA PAIR_DELAY=() PAIR_KM=() PAIR_RAW=()
  NODE_IDS=() NODE_REGION=() NODE_HTTP=() NODE_ADMIN=() NODE_QUIC=() NODE_PID=() RELAY_KEYS=()
  # The regions as the node reads them (its checks, its id order).
  mesh_need_binaries
  rows="$("$NODE_BIN" regions list --regions "$REGIONS_DIR" --fields id,http,quic)" ||
    die "the node refuses the regions in $REGIONS_DIR"
  while IFS=$'\t' read -r id http quic; do
    REGION_IDS+=("$id"); REGION_HTTP[$id]="$http"; REGION_QUIC[$id]="$quic"
  done <<<"$rows"

  if (( MESH_REPLICAS == 1 )); then
    for r in "${REGION_IDS[@]}"; do
      NODE_IDS+=("$r"); NODE_REGION+=("$r")
      NODE_HTTP+=("${REGION_HTTP[$r]}"); NODE_QUIC+=("${REGION_QUIC[$r]}")
      NODE_ADMIN+=("${REGION_HTTP[$r]%:*}:$(( ${REGION_HTTP[$r]##*:} + MESH_ADMIN_OFFSET ))")
    done
  else
    # The region's own HTTP port belongs to nginx; replicas take free ports.
    n=$(( ${#REGION_IDS[@]} * MESH_REPLICAS ))
    mapfile -t ports < <("${MESHPY[@]}" ports --tcp "$(( 2 * n ))" --udp "$n")
    (( ${#ports[@]} == 3 * n )) || die "could not find free ports"
    i=0
    for r in "${REGION_IDS[@]}"; do
      for (( k = 1; k <= MESH_REPLICAS; k++ )); do
        NODE_IDS+=("$r-$k"); NODE_REGION+=("$r")
        NODE_HTTP+=("127.0.0.1:${ports[i]}"); NODE_ADMIN+=("127.0.0.1:${ports[n + i]}")
        NODE_QUIC+=("127.0.0.1:${ports[2 * n + i]}")
        i=$(( i + 1 ))
      done
    done
  fi

  (( MESH_WAN )) || return 0
  local a b km raw ms
  rows="$("$NODE_BIN" regions distances --regions "$REGIONS_DIR" | wan_delays)"
  while IFS=$'\t' read -r a b km raw ms; do
    PAIR_DELAY["$a|$b"]="${MESH_WAN_DELAY:-${ms}ms}"; PAIR_DELAY["$b|$a"]="${PAIR_DELAY["$a|$b"]}"
    PAIR_KM["$a|$b"]="$km" PAIR_RAW["$a|$b"]="$raw"
  done <<<"$rows"
  for i in "${!NODE_IDS[@]}"; do
    for j in "${!NODE_IDS[@]}"; do
      [[ "${NODE_REGION[i]}" != "${NODE_REGION[j]}" ]] && RELAY_KEYS+=("$i>$j")
    done
  done
  mapfile -t ports < <("${MESHPY[@]}" ports --udp "${#RELAY_KEYS[@]}")
  i=0
  for k in "${RELAY_KEYS[@]}"; do
    RELAY_ADDR[$k]="127.0.0.1:${ports[i]}"
    RELAY_DELAY[$k]="${PAIR_DELAY["${NODE_REGION[${k%>*}]}|${NODE_REGION[${k#*>}]}"]}"
    i=$(( i + 1 ))
  done
}

# Refuses to start over another mesh (e.g. scripts/mesh.sh while chaos.sh
# runs): the regions' HTTP and QUIC ports and the nodes' admin ports must be
# free.
mesh_check_ports() {
  local r i specs=() busy
  for r in "${REGION_IDS[@]}"; do
    specs+=("tcp:${REGION_HTTP[$r]}")
    (( MESH_REPLICAS > 1 )) || specs+=("udp:${REGION_QUIC[$r]}")
  done
  for i in "${!NODE_ADMIN[@]}"; do specs+=("tcp:${NODE_ADMIN[i]}"); done
  busy="$("${MESHPY[@]}" busy "${specs[@]}")" ||
    die "ports in use ($busy): is another mesh (scripts/mesh.sh, scripts/chaos.sh) running?"
}

# The address node i dials for node j: the relay i>j on a WAN, else j itself.
peer_addr() {
  local i="$1" j="$2"
  if (( MESH_WAN )) && [[ -n "${RELAY_ADDR["$i>$j"]:-}" ]]; then
    echo "${RELAY_ADDR["$i>$j"]}"
  else
    echo "${NODE_QUIC[j]}"
  fi
}

# ID=URL arguments for mesh.py and `bot check`, one per node: the admin
# listener, where /debug/state, /metrics and /matches are.
node_urls() {
  local i
  for i in "${!NODE_IDS[@]}"; do echo "${NODE_IDS[i]}=http://${NODE_ADMIN[i]}"; done
}

# --- binaries and certificates -----------------------------------------------

# Once per run: mesh_plan needs the node (to read the regions), mesh_up both.
BINARIES_READY=0
mesh_need_binaries() {
  (( BINARIES_READY )) && return 0
  if [[ "$MESH_BIN" == "$CARGO_RELEASE" ]]; then
    # Always: a no-op when up to date, and never a stale binary after a pull.
    log "building the node and the bot (release)"
    cargo build --release --locked -p node -p bot
  fi
  [[ -x "$NODE_BIN" && -x "$BOT_BIN" ]] || die "no node/bot binaries in $MESH_BIN"
  if (( MESH_WAN )) && ! "$NODE_BIN" wan-relay --help >/dev/null 2>&1; then
    die "$NODE_BIN has no 'wan-relay' subcommand yet; rebuild it (cargo build --release --locked -p node)"
  fi
  "$NODE_BIN" regions --help >/dev/null 2>&1 ||
    die "$NODE_BIN has no 'regions' subcommand yet; rebuild it (cargo build --release --locked -p node)"
  BINARIES_READY=1
}

# One CA and one token key for the mesh, made on first run; a certificate
# for each node id that does not have one yet (the CA is kept, so old
# certificates stay valid; the key is kept, so tokens outlive a restart).
mesh_certs() {
  local dir="$MESH_DIR/certs" args=() id
  mkdir -p "$dir"
  if [[ ! -s "$dir/token.keys" ]]; then
    (umask 077 && "$NODE_BIN" token-key >"$dir/token.keys")
  fi
  for id in "${NODE_IDS[@]}"; do
    [[ -f "$dir/$id.pem" && -f "$dir/$id.key" ]] || args+=(--node "$id")
  done
  (( ${#args[@]} )) || return 0
  "$NODE_BIN" certs --dir "$dir" "${args[@]}" --ip 127.0.0.1 >/dev/null
}

# --- relays ----------------------------------------------------------------

mesh_start_relays() {
  local k i j dir="$MESH_DIR/wan"
  (( MESH_WAN )) || return 0
  mkdir -p "$dir"
  for k in "${RELAY_KEYS[@]}"; do
    i="${k%>*}" j="${k#*>}"
    NO_COLOR=1 "$NODE_BIN" wan-relay --listen "${RELAY_ADDR[$k]}" --forward "${NODE_QUIC[j]}" \
      --delay "${RELAY_DELAY[$k]}" --jitter "$MESH_WAN_JITTER" --loss "$MESH_WAN_LOSS" \
      >"$dir/${NODE_IDS[i]}-to-${NODE_IDS[j]}.log" 2>&1 &
    RELAY_PID[$k]=$!
  done
  sleep 0.3
  for k in "${RELAY_KEYS[@]}"; do
    alive "${RELAY_PID[$k]}" || die "relay $k did not start: $(tail -n 3 "$dir/"*.log)"
  done
}

mesh_print_wan() {
  local a b key
  (( MESH_WAN )) || return 0
  echo "WAN relays: ${#RELAY_KEYS[@]} (one per ordered pair of nodes in different regions)," \
    "jitter $MESH_WAN_JITTER, loss $MESH_WAN_LOSS"
  for a in "${REGION_IDS[@]}"; do
    for b in "${REGION_IDS[@]}"; do
      [[ "$a" < "$b" ]] || continue
      key="$a|$b"
      if [[ -n "$MESH_WAN_DELAY" ]]; then
        printf '  %-16s <-> %-16s one-way %s (--wan-delay)\n' "$a" "$b" "${PAIR_DELAY[$key]}"
      else
        printf '  %-16s <-> %-16s %6s km between centroids: %s ms computed, one-way %s (floor %sms)\n' \
          "$a" "$b" "${PAIR_KM[$key]}" "${PAIR_RAW[$key]}" "${PAIR_DELAY[$key]}" "$MESH_WAN_MIN_MS"
      fi
    done
  done
}

# --- nodes -------------------------------------------------------------------

# Starts node i in the background; mesh_wait_ready waits for it.
mesh_start_node() {
  local i="$1" j id="${NODE_IDS[$1]}" dir args wrap=()
  dir="$MESH_DIR/$id"
  mkdir -p "$dir/data"
  rm -f "$dir/ready.json"
  args=(--regions "$REGIONS_DIR" --region "${NODE_REGION[i]}" --node-id "$id"
        --listen "${NODE_HTTP[i]}" --admin-listen "${NODE_ADMIN[i]}" --mesh-listen "${NODE_QUIC[i]}"
        --certs "$MESH_DIR/certs" --token-keys-file "$MESH_DIR/certs/token.keys" --data-dir "$dir/data" --ready-file "$dir/ready.json")
  for j in "${!NODE_IDS[@]}"; do
    (( j == i )) || args+=(--peer "${NODE_IDS[j]}=$(peer_addr "$i" "$j")")
  done
  args+=("${NODE_EXTRA[@]}")
  [[ -n "${NODE_WRAP[i]:-}" ]] && read -ra wrap <<<"${NODE_WRAP[i]}"
  echo "=== $(date -Is) ${wrap[*]} $NODE_BIN ${args[*]}" >>"$dir/node.log"
  # NO_COLOR: plain log files (tracing colours them by default).
  NO_COLOR=1 "${wrap[@]}" "$NODE_BIN" "${args[@]}" >>"$dir/node.log" 2>&1 &
  NODE_PID[i]=$!
}

# Waits for the ready files of the given nodes (default: all).
mesh_wait_ready() {
  local i waited=0 pending
  (( $# )) || set -- "${!NODE_IDS[@]}"
  while :; do
    pending=0
    for i in "$@"; do
      [[ -f "$MESH_DIR/${NODE_IDS[i]}/ready.json" ]] && continue
      alive "${NODE_PID[i]}" ||
        die "node ${NODE_IDS[i]} exited; last lines of $MESH_DIR/${NODE_IDS[i]}/node.log:
$(tail -n 15 "$MESH_DIR/${NODE_IDS[i]}/node.log")"
      pending=1
    done
    (( pending )) || return 0
    (( waited++ < 300 )) || die "nodes not ready after 30 s; see $MESH_DIR/*/node.log"
    sleep 0.1
  done
}

mesh_start_nodes() {
  local i
  for i in "${!NODE_IDS[@]}"; do mesh_start_node "$i"; done
  mesh_wait_ready
}

mesh_node_pids() {
  local i
  for i in "${!NODE_PID[@]}"; do echo "${NODE_PID[i]}"; done
}

# --- nginx (replicas) ----------------------------------------------------------

mesh_need_nginx() {
  command -v nginx >/dev/null && return 0
  local sudo=()
  if (( EUID != 0 )); then
    sudo -n true 2>/dev/null || die "nginx is missing; install it (apt-get install nginx-light) or run as root"
    sudo=(sudo -n)
  fi
  log "installing nginx from Debian's packages"
  # policy-rc.d-less containers may start the system nginx on :80; that
  # service is not ours and is left alone.
  "${sudo[@]}" apt-get install -y nginx-light >/dev/null 2>&1 ||
    { "${sudo[@]}" apt-get update >/dev/null && "${sudo[@]}" apt-get install -y nginx-light >/dev/null 2>&1; } ||
    "${sudo[@]}" apt-get install -y nginx >/dev/null ||
    die "could not install nginx"
}

# One upstream per region, the region's mesh http address in front of it.
mesh_nginx_conf() {
  local r i dir
  dir="$(cd "$MESH_DIR/nginx" && pwd)"
  (( EUID == 0 )) && echo "user $(id -un) $(id -gn);  # workers as the current user, not nobody"
  cat <<EOF
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
  access_log $dir/access.log;
  client_body_temp_path $dir/tmp/body;
  proxy_temp_path $dir/tmp/proxy;
  fastcgi_temp_path $dir/tmp/fastcgi;
  uwsgi_temp_path $dir/tmp/uwsgi;
  scgi_temp_path $dir/tmp/scgi;
  # Websockets: pass Upgrade on; otherwise an empty Connection keeps
  # upstream connections alive.
  map \$http_upgrade \$connection_upgrade { default upgrade; '' ''; }
EOF
  for r in "${REGION_IDS[@]}"; do
    echo "  upstream $r {"
    for i in "${!NODE_IDS[@]}"; do
      [[ "${NODE_REGION[i]}" == "$r" ]] && echo "    server ${NODE_HTTP[i]} max_fails=1 fail_timeout=2s;"
    done
    cat <<EOF
    keepalive 64;
  }
  server {
    listen ${REGION_HTTP[$r]};
    location / {
      proxy_pass http://$r;
      include $dir/proxy.conf;
    }
    # By default (proxy_next_upstream error timeout) a POST is retried on
    # another replica only if it never reached the first: a retried rider
    # would be accepted twice. A rating, though, can reach a replica that
    # has not heard of the match yet (replication takes milliseconds); its
    # 404 changed nothing, so the other replicas are asked too.
    location = /rating {
      proxy_pass http://$r;
      include $dir/proxy.conf;
      proxy_next_upstream error timeout http_404 non_idempotent;
    }
  }
EOF
  done
  echo "}"
}

mesh_nginx_proxy_conf() {
  cat <<'EOF'
proxy_http_version 1.1;
proxy_set_header Upgrade $http_upgrade;
proxy_set_header Connection $connection_upgrade;
proxy_set_header Host $host;
proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
proxy_read_timeout 1h;
proxy_send_timeout 1h;
EOF
}

NGINX_RUNNING=0
mesh_start_nginx() {
  local dir="$MESH_DIR/nginx"
  (( MESH_REPLICAS > 1 )) || return 0
  mesh_need_nginx
  mkdir -p "$dir/tmp"
  rm -f "$dir/nginx.pid"
  mesh_nginx_proxy_conf >"$dir/proxy.conf"
  mesh_nginx_conf >"$dir/nginx.conf"
  # -e: the error log before the config is read (default is /var/log/nginx).
  nginx -p "$dir" -c "$(cd "$dir" && pwd)/nginx.conf" -e "$(cd "$dir" && pwd)/error.log" ||
    die "nginx did not start; see $dir/error.log"
  NGINX_RUNNING=1
  for _ in $(seq 50); do [[ -s "$dir/nginx.pid" ]] && return 0; sleep 0.1; done
  die "nginx wrote no pid file; see $dir/error.log"
}

mesh_stop_nginx() {
  local pidfile="$MESH_DIR/nginx/nginx.pid" pid
  (( NGINX_RUNNING )) || return 0
  NGINX_RUNNING=0
  [[ -s "$pidfile" ]] || return 0
  pid="$(cat "$pidfile")"
  # Not our child (nginx daemonises): poll until the master is gone.
  kill -QUIT "$pid" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -TERM "$pid" 2>/dev/null || true
}

# --- everything ---------------------------------------------------------------

# Where each region listens: the public API and, per node, the operator
# listener (the map at its root).
mesh_print_layout() {
  local r i
  for r in "${REGION_IDS[@]}"; do
    if (( MESH_REPLICAS > 1 )); then
      echo "region $r: http://${REGION_HTTP[$r]} (nginx) ->"
    else
      echo "region $r:"
    fi
    for i in "${!NODE_IDS[@]}"; do
      [[ "${NODE_REGION[i]}" == "$r" ]] || continue
      printf '  node %-18s http://%-16s admin (map) http://%-16s quic %-16s log %s\n' \
        "${NODE_IDS[i]}" "${NODE_HTTP[i]}" "${NODE_ADMIN[i]}" "${NODE_QUIC[i]}" \
        "$MESH_DIR/${NODE_IDS[i]}/node.log"
    done
  done
  (( MESH_REPLICAS > 1 )) && echo "nginx: $MESH_DIR/nginx/nginx.conf (logs next to it)"
  mesh_print_wan
}

# Certificates, relays, nodes (ready), nginx.
mesh_up() {
  mkdir -p "$MESH_DIR"
  mesh_need_binaries
  mesh_certs
  mesh_start_relays
  mesh_start_nodes
  mesh_start_nginx
}

mesh_status() {
  local urls
  mapfile -t urls < <(node_urls)
  "${MESHPY[@]}" status "${urls[@]}" || true
}

# Stops nodes, relays and nginx this shell started (the caller stops its own
# extras, e.g. the bot, first).
mesh_stop_all() {
  local pids=() k i
  for i in "${!NODE_PID[@]}"; do [[ -n "${NODE_PID[i]}" ]] && pids+=("${NODE_PID[i]}"); done
  # Nodes first, while their peers' relays still pass their goodbyes.
  stop_pids TERM 15 "${pids[@]}"
  NODE_PID=()
  pids=()
  for k in "${!RELAY_PID[@]}"; do
    kill -CONT "${RELAY_PID[$k]}" 2>/dev/null || true   # a stopped relay ignores TERM
    pids+=("${RELAY_PID[$k]}")
  done
  stop_pids TERM 5 "${pids[@]}"
  RELAY_PID=()
  mesh_stop_nginx
}
