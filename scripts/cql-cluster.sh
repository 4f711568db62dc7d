#!/usr/bin/env bash
# A real three-datacenter CQL cluster on loopback for tests and local runs:
# one node per region datacenter (the "datacenter" of regions/*.json, in the
# regions' id order, as `node regions list` gives them), node N at
# 127.0.0.N:9042, rack1, GossipingPropertyFileSnitch.
#
#   scripts/cql-cluster.sh up            start every node not running; wait until
#                                        all serve CQL and see each other as UP
#   scripts/cql-cluster.sh down          stop the nodes this script started
#   scripts/cql-cluster.sh status        DC, address, pid and CQL state per node
#   scripts/cql-cluster.sh stop-node N [--kill]
#                                        stop node N (1 = first region): SIGTERM,
#                                        or SIGKILL with --kill (a crash, no drain);
#                                        returns once the other nodes see it DOWN
#   scripts/cql-cluster.sh start-node N  start node N again, wait until it serves
#                                        CQL and sees every running node as UP
#   scripts/cql-cluster.sh purge         down, then delete the state (data, logs)
#
# Engine, first that fits (or CQL_ENGINE=scylla|docker|cassandra):
#   scylla      a `scylla` binary on PATH
#   docker      a running Docker engine, image $CQL_SCYLLA_IMAGE (scylladb/scylla)
#   cassandra   Apache Cassandra from Maven Central (org.apache.cassandra:cassandra-all
#               and its dependencies, resolved once into $CQL_CACHE) on Java 17 or 11,
#               started as plain `java` processes (works as root)
#
# Environment:
#   CQL_DIR      state: configs, data, logs, pids (default .cql under the repo root)
#   CQL_CACHE    jar cache (default ~/.cache/ride-cql); delete it to resolve again
#   CQL_REGIONS  region files (default regions/)
#   CQL_NODE_BIN the node binary (default: $CARGO_TARGET_DIR/release/node, else
#                target/release/node; built when missing)
#   CQL_CASSANDRA_VERSION (default 5.0.9)   CQL_HEAP / CQL_HEAP_MIN (default 768m / 384m)
#   CQL_TIMEOUT  seconds to wait for one node, and again for the mesh (default 240)
#   CQL_RING_DELAY_MS  Cassandra's ring delay (default 1000; Cassandra's own is 30000)
#   CQL_JAVA     a java binary to use (must be 11 or 17)
#   CQL_JAVA_OPTS  extra JVM flags, last on the command line (nodes run C1-only,
#                -XX:TieredStopAtLevel=1, which halves start time on 2 cores; pass
#                -XX:TieredStopAtLevel=4 for full JIT)
#
# Prints CQL_NODES=127.0.0.1:9042,... at the end of `up` (stdout; all else goes
# to stderr).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
STATE="${CQL_DIR:-.cql}"
[[ "$STATE" == /* ]] || STATE="$ROOT/$STATE"
CACHE="${CQL_CACHE:-${HOME:-/root}/.cache/ride-cql}"
REGIONS="${CQL_REGIONS:-$ROOT/regions}"
CASSANDRA_VERSION="${CQL_CASSANDRA_VERSION:-5.0.9}"
HEAP="${CQL_HEAP:-768m}"
HEAP_MIN="${CQL_HEAP_MIN:-384m}"
TIMEOUT="${CQL_TIMEOUT:-240}"
RING_DELAY_MS="${CQL_RING_DELAY_MS:-1000}"
SCYLLA_IMAGE="${CQL_SCYLLA_IMAGE:-scylladb/scylla:2025.1}"
SCYLLA_MEMORY="${CQL_SCYLLA_MEMORY:-512M}"
CLUSTER_NAME="ride-local"
PORT=9042

log() { printf 'cql-cluster: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- the node: region files and CQL, as the node itself reads and speaks them
# `node regions list` gives the datacenters, `node cql status|wait` what each
# database node reports, through the driver the node stores ratings with.
# Built (release) here when missing, so that this script works on its own on
# a fresh clone; a relative CARGO_TARGET_DIR is taken from the caller's
# directory, as cargo takes it.
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
[[ "$TARGET" == /* ]] || TARGET="$PWD/$TARGET"
NODE_BIN="${CQL_NODE_BIN:-$TARGET/release/node}"
need_node() {
  "$NODE_BIN" cql --help >/dev/null 2>&1 && return 0
  [[ -z "${CQL_NODE_BIN:-}" ]] || die "$CQL_NODE_BIN has no 'cql' subcommand"
  command -v cargo >/dev/null || die "no node binary at $NODE_BIN, and no cargo to build it"
  log "building the node (release) into $TARGET: this script uses its regions and cql subcommands"
  (cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" cargo build --release --locked -p node >&2) ||
    die "could not build the node"
}
need_node
DCS_TEXT="$("$NODE_BIN" regions list --regions "$REGIONS" --fields datacenter)" ||
  die "the node refuses the regions in $REGIONS"
mapfile -t DCS <<<"$DCS_TEXT"
N=${#DCS[@]}
(( N >= 1 && N <= 250 )) || die "need 1..250 region files in $REGIONS"
ip_of() { echo "127.0.0.$1"; }
node_dir() { echo "$STATE/node$1"; }
CONTACTS="$(for i in $(seq "$N"); do printf '%s:%s,' "$(ip_of "$i")" "$PORT"; done)"
CONTACTS="${CONTACTS%,}"
# every node is a seed, so any node can restart while any other is up
SEEDS="$(for i in $(seq "$N"); do printf '%s,' "$(ip_of "$i")"; done)"; SEEDS="${SEEDS%,}"

# --- engine -----------------------------------------------------------------
pick_engine() {
  if [[ -f "$STATE/engine" ]]; then cat "$STATE/engine"; return; fi
  if [[ -n "${CQL_ENGINE:-}" ]]; then echo "$CQL_ENGINE"
  elif command -v scylla >/dev/null; then echo scylla
  elif command -v docker >/dev/null && timeout 10 docker info >/dev/null 2>&1; then echo docker
  else echo cassandra; fi
}
ENGINE="$(pick_engine)"
case "$ENGINE" in scylla|docker|cassandra) ;; *) die "unknown engine $ENGINE" ;; esac

apt_install() {
  command -v apt-get >/dev/null || return 1
  log "installing $* with apt-get"
  local sudo=(); [[ $(id -u) == 0 ]] || sudo=(sudo)
  [[ -n "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -print -quit 2>/dev/null)" ]] \
    || "${sudo[@]}" apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@" >&2
}

java_major() { "$1" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java\.specification\.version = \(1\.\)\{0,1\}\([0-9]*\).*/\2/p'; }
find_java() { # Cassandra 5.0 runs on Java 11 and 17 only
  local c
  for c in ${CQL_JAVA:-} ${JAVA_HOME:+$JAVA_HOME/bin/java} "$(command -v java || true)" \
           /usr/lib/jvm/*-17-*/bin/java /usr/lib/jvm/*17*/bin/java /usr/lib/jvm/*-11-*/bin/java; do
    [[ -x "$c" ]] || continue
    case "$(java_major "$c")" in 11|17) echo "$c"; return 0 ;; esac
  done
  return 1
}

LIB="$CACHE/cassandra-$CASSANDRA_VERSION/lib"
resolve_cassandra() {
  [[ -f "$LIB/.complete" ]] && return 0
  command -v mvn >/dev/null || apt_install maven || die "mvn is missing and could not be installed"
  log "resolving org.apache.cassandra:cassandra-all:$CASSANDRA_VERSION into $LIB (once)"
  local work="$CACHE/cassandra-$CASSANDRA_VERSION"
  mkdir -p "$work" && rm -rf "$LIB.tmp"
  cat >"$work/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.ride</groupId>
  <artifactId>cql-cluster-deps</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.cassandra</groupId>
      <artifactId>cassandra-all</artifactId>
      <version>$CASSANDRA_VERSION</version>
    </dependency>
  </dependencies>
</project>
EOF
  mvn -q -B -Dstyle.color=never -f "$work/pom.xml" -Dmaven.repo.local="$CACHE/m2" \
    org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$LIB.tmp" >"$work/mvn.log" 2>&1 \
    || { tail -n 40 "$work/mvn.log" >&2; die "maven could not resolve cassandra-all:$CASSANDRA_VERSION"; }
  ls "$LIB.tmp"/jamm-*.jar >/dev/null 2>&1 || die "no jamm jar among the resolved dependencies"
  rm -rf "$LIB" && mv "$LIB.tmp" "$LIB" && touch "$LIB/.complete"
  rm -rf "$CACHE/m2"   # the jars now live in $LIB; maven's own copy is not needed
}

# --- per-node configuration ------------------------------------------------
# What Cassandra's and Scylla's YAML share: the cluster, its seeds, and the
# node's address ($1).
write_common_yaml() {
  cat <<EOF
# generated by scripts/cql-cluster.sh; rewritten on every start
cluster_name: $CLUSTER_NAME
num_tokens: 16
endpoint_snitch: GossipingPropertyFileSnitch
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "$SEEDS"
listen_address: $1
rpc_address: $1
EOF
}

write_rackdc() { printf 'dc=%s\nrack=rack1\n' "${DCS[$(($1 - 1))]}" >"$2/cassandra-rackdc.properties"; }

write_cassandra_conf() {
  local i=$1 d ip conf
  d="$(node_dir "$i")"; ip="$(ip_of "$i")"; conf="$d/conf"
  mkdir -p "$conf" "$d/data" "$d/commitlog" "$d/saved_caches" "$d/hints" "$d/cdc_raw" "$d/triggers"
  write_rackdc "$i" "$conf"
  { write_common_yaml "$ip"; cat <<EOF
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
storage_port: 7000
native_transport_port: $PORT
start_native_transport: true
auto_bootstrap: false
storage_compatibility_mode: NONE
authenticator: AllowAllAuthenticator
authorizer: AllowAllAuthorizer
data_file_directories:
  - $d/data
commitlog_directory: $d/commitlog
saved_caches_directory: $d/saved_caches
hints_directory: $d/hints
cdc_raw_directory: $d/cdc_raw
commitlog_sync: periodic
commitlog_sync_period: 10000ms
commitlog_segment_size: 8MiB
commitlog_total_space: 64MiB
memtable_heap_space: 64MiB
memtable_offheap_space: 64MiB
file_cache_size: 32MiB
key_cache_size: 16MiB
concurrent_compactors: 1
auto_snapshot: false
phi_convict_threshold: 5
EOF
  } >"$conf/cassandra.yaml"
  cat >"$conf/logback.xml" <<'EOF'
<configuration>
  <appender name="STDOUT" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="STDOUT"/></root>
</configuration>
EOF
}

write_scylla_conf() {
  local i=$1 d ip conf
  d="$(node_dir "$i")"; ip="$(ip_of "$i")"; conf="$d/conf"
  mkdir -p "$conf" "$d/data"
  write_rackdc "$i" "$conf"
  { write_common_yaml "$ip"; cat <<EOF
api_address: $ip
prometheus_address: $ip
native_transport_port: $PORT
workdir: $d/data
EOF
  } >"$conf/scylla.yaml"
}

# Java flags: conf/jvm17-server.options of Apache Cassandra 5.0 (JPMS list,
# G1), plus what bin/cassandra would add.
JVM17_OPTS=(
  -XX:+UseG1GC -XX:+ParallelRefProcEnabled -XX:MaxTenuringThreshold=1
  -XX:G1RSetUpdatingPauseTimePercent=5 -XX:MaxGCPauseMillis=300
  -XX:InitiatingHeapOccupancyPercent=70
  -Djdk.attach.allowAttachSelf=true
  --add-exports java.base/jdk.internal.misc=ALL-UNNAMED
  --add-exports java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED
  --add-exports java.rmi/sun.rmi.registry=ALL-UNNAMED
  --add-exports java.rmi/sun.rmi.server=ALL-UNNAMED
  --add-exports java.sql/java.sql=ALL-UNNAMED
  --add-exports java.base/java.lang.ref=ALL-UNNAMED
  --add-exports jdk.unsupported/sun.misc=ALL-UNNAMED
  --add-exports jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED
  --add-exports jdk.attach/sun.tools.attach=ALL-UNNAMED
  --add-opens java.base/java.lang.module=ALL-UNNAMED
  --add-opens java.base/jdk.internal.loader=ALL-UNNAMED
  --add-opens java.base/jdk.internal.ref=ALL-UNNAMED
  --add-opens java.base/jdk.internal.reflect=ALL-UNNAMED
  --add-opens java.base/jdk.internal.math=ALL-UNNAMED
  --add-opens java.base/jdk.internal.module=ALL-UNNAMED
  --add-opens java.base/jdk.internal.util.jar=ALL-UNNAMED
  --add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED
  --add-opens java.base/sun.nio.ch=ALL-UNNAMED
  --add-opens java.base/java.io=ALL-UNNAMED
  --add-opens java.base/java.lang.reflect=ALL-UNNAMED
  --add-opens jdk.compiler/com.sun.tools.javac=ALL-UNNAMED
  --add-opens java.base/java.lang=ALL-UNNAMED
  --add-opens java.base/java.util=ALL-UNNAMED
  -Dio.netty.tryReflectionSetAccessible=true
  -Dio.netty.allocator.useCacheForAllThreads=true
  -Dio.netty.allocator.maxOrder=11
)

# --- process bookkeeping ----------------------------------------------------
pid_of() { # prints the pid of node $1 if it is alive and is ours
  local d pid; d="$(node_dir "$1")"
  [[ -f "$d/pid" ]] || return 1
  pid="$(cat "$d/pid")"
  [[ "$pid" =~ ^[0-9]+$ && -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$d/conf/" || return 1
  echo "$pid"
}
container() { echo "ride-cql-$1"; }
running() {
  if [[ "$ENGINE" == docker ]]; then
    [[ "$(docker inspect -f '{{.State.Running}}' "$(container "$1")" 2>/dev/null)" == true ]]
  else pid_of "$1" >/dev/null; fi
}
node_log() { echo "$(node_dir "$1")/system.log"; }
refresh_log() { # docker: this run's container log into the node's log file
  [[ "$ENGINE" != docker ]] && return 0
  docker logs --since "$(cat "$(node_dir "$1")/started" 2>/dev/null || echo 1970-01-01T00:00:00Z)" \
    "$(container "$1")" >"$(node_log "$1")" 2>&1 || true
}

wait_exec() { # the forked shell becomes the server: wait for the exec (or the exit)
  local n
  for ((n = 0; n < 100; n++)); do
    pid_of "$1" >/dev/null && return 0
    kill -0 "$(cat "$(node_dir "$1")/pid")" 2>/dev/null || return 0
    sleep 0.05
  done
}

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

start_node() {
  local i=$1 d ip p; d="$(node_dir "$i")"; ip="$(ip_of "$i")"
  for p in "$PORT" 7000; do
    ! port_open "$ip" "$p" || die "$ip:$p is in use by a process this script did not start"
  done
  mkdir -p "$d"
  [[ -f "$d/system.log" ]] && mv -f "$d/system.log" "$d/system.log.1"
  log "starting node $i (dc ${DCS[$((i - 1))]}, $ip:$PORT, $ENGINE)"
  case "$ENGINE" in
    cassandra)
      write_cassandra_conf "$i"
      local jamm=("$LIB"/jamm-*.jar) extra=()
      read -r -a extra <<<"${CQL_JAVA_OPTS:-}"
      setsid "$JAVA" -Xms"$HEAP_MIN" -Xmx"$HEAP" -Xss256k -XX:+PerfDisableSharedMem -XX:+ExitOnOutOfMemoryError -XX:TieredStopAtLevel=1 \
        -XX:G1HeapRegionSize=4m "${JVM17_OPTS[@]}" -javaagent:"${jamm[0]}" \
        -Djava.net.preferIPv4Stack=true -Djna.nosys=true \
        -Dcassandra.config="file://$d/conf/cassandra.yaml" \
        -Dcassandra-rackdc.properties="file://$d/conf/cassandra-rackdc.properties" \
        -Dlogback.configurationFile="file://$d/conf/logback.xml" \
        -Dcassandra.storagedir="$d" -Dcassandra.logdir="$d" -Dcassandra.triggers_dir="$d/triggers" \
        -Dcassandra-foreground=yes \
        -Dcassandra.skip_wait_for_gossip_to_settle=0 -Dcassandra.ring_delay_ms="$RING_DELAY_MS" \
        -Dcassandra.superuser_setup_delay_ms=0 -Dcassandra.memtable_row_overhead_computation_step=100 \
        "${extra[@]}" -cp "$LIB/*" org.apache.cassandra.service.CassandraDaemon \
        >"$d/system.log" 2>&1 </dev/null &
      echo $! >"$d/pid"; wait_exec "$i" ;;
    scylla)
      write_scylla_conf "$i"
      SCYLLA_CONF="$d/conf" setsid scylla --options-file "$d/conf/scylla.yaml" \
        --developer-mode=1 --smp 1 --memory "$SCYLLA_MEMORY" --overprovisioned \
        >"$d/system.log" 2>&1 </dev/null &
      echo $! >"$d/pid"; wait_exec "$i" ;;
    docker) # data lives in the container: stop-node/start-node keep it, down removes it
      write_rackdc "$i" "$d"
      date -u +%Y-%m-%dT%H:%M:%SZ >"$d/started"
      if docker inspect "$(container "$i")" >/dev/null 2>&1; then
        docker start "$(container "$i")" >/dev/null
      else
        docker run -d --name "$(container "$i")" --network host \
          -v "$d/cassandra-rackdc.properties:/etc/scylla/cassandra-rackdc.properties:ro" \
          "$SCYLLA_IMAGE" --cluster-name "$CLUSTER_NAME" --endpoint-snitch GossipingPropertyFileSnitch \
          --listen-address "$ip" --rpc-address "$ip" --seeds "$SEEDS" --api-address "$ip" \
          --smp 1 --memory "$SCYLLA_MEMORY" --overprovisioned 1 --developer-mode 1 --io-setup 0 \
          --prometheus-address "$ip" >/dev/null
      fi ;;
  esac
}

fail_node() { # node message
  local f; refresh_log "$1"; f="$(node_log "$1")"
  log "node $1 ($(ip_of "$1")): $2"
  if grep -qE '^ERROR|Exception' "$f" 2>/dev/null; then
    log "first errors in $f:"; grep -m 4 -E '^ERROR|Exception' "$f" | cut -c1-300 >&2
  fi
  log "last lines of $f:"; tail -n 25 "$f" | cut -c1-300 >&2 2>/dev/null || true
  exit 1
}

# node: "<address> <dc> <rack> <peer>/<dc>..." (tab-separated) as the node
# itself reports it; fails if it does not serve CQL.
serves_cql() { "$NODE_BIN" cql status --cql-nodes "$(ip_of "$1"):$PORT" 2>/dev/null; }

wait_cql() { # node: until it answers a CQL query and reports its own DC
  local i=$1 want="${DCS[$(($1 - 1))]}" err waiter status=0
  err="$(node_dir "$i")/cql-wait.err"
  "$NODE_BIN" cql wait --cql-nodes "$(ip_of "$i"):$PORT" --datacenter "$want" \
    --timeout "${TIMEOUT}s" >/dev/null 2>"$err" &
  waiter=$!
  while kill -0 "$waiter" 2>/dev/null; do
    if ! running "$i"; then
      kill "$waiter" 2>/dev/null || true; wait "$waiter" 2>/dev/null || true
      fail_node "$i" "process exited"
    fi
    sleep 1
  done
  wait "$waiter" || status=$?
  case $status in
    0) return 0 ;;
    3) fail_node "$i" "$(<"$err") (stale data in $(node_dir "$i")? try purge)" ;;
    *) fail_node "$i" "no CQL on $(ip_of "$i"):$PORT after ${TIMEOUT}s: $(<"$err")" ;;
  esac
}

up_peers() { # log file: the addresses it last reported as UP (since its last start)
  [[ -f "$1" ]] || return 0
  # No such line yet is an empty answer, not a failure (pipefail, set -e).
  { grep -aoE '[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+(:[0-9]+)? is now (UP|DOWN)' "$1" || true; } |
    awk '{ sub(/:[0-9]+$/, "", $1); state[$1] = $4 } END { for (a in state) if (state[a] == "UP") print a }' |
    sort | tr '\n' ' '
}

wait_mesh() { # every running node sees every other running node as UP
  local deadline=$((SECONDS + TIMEOUT)) i j ok missing live bad
  while :; do
    ok=1; missing=""; bad=""
    live=(); for j in $(seq "$N"); do running "$j" && live+=("$j"); done
    for i in "${live[@]}"; do
      refresh_log "$i"
      local seen; seen=" $(up_peers "$(node_log "$i")") "
      for j in "${live[@]}"; do
        [[ $i == "$j" || "$seen" == *" $(ip_of "$j") "* ]] || { ok=0; bad=$i; missing="node $i does not see node $j as UP"; }
      done
    done
    ((ok)) && return 0
    ((SECONDS < deadline)) || fail_node "$bad" "$missing after ${TIMEOUT}s"
    sleep 1
  done
}

stop_node() { # node [KILL]: SIGTERM (Cassandra drains, a few seconds) or SIGKILL (a crash)
  local i=$1 sig=${2:-TERM} quiet=${3:-} pid n
  if [[ "$ENGINE" == docker ]]; then
    running "$i" || return 0
    [[ -n $quiet ]] || log "stopping node $i (container $(container "$i"), SIG$sig)"
    if [[ $sig == KILL ]]; then docker kill "$(container "$i")" >/dev/null; else docker stop -t 60 "$(container "$i")" >/dev/null; fi
    return 0
  fi
  pid="$(pid_of "$i")" || { rm -f "$(node_dir "$i")/pid"; return 0; }
  [[ -n $quiet ]] || log "stopping node $i (pid $pid, SIG$sig)"
  kill -"$sig" "$pid" 2>/dev/null || true
  for ((n = 0; n < 600; n++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then log "node $i still running after 60s: SIGKILL"; kill -KILL "$pid" || true; fi
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  rm -f "$(node_dir "$i")/pid"
}

wait_seen_down() { # every running node sees node $1 as DOWN (instant after SIGTERM;
  # after SIGKILL it takes the failure detector several seconds)
  local i=$1 j deadline=$((SECONDS + TIMEOUT))
  for j in $(seq "$N"); do
    if [[ $j == "$i" ]] || ! running "$j"; then continue; fi
    while refresh_log "$j"; [[ " $(up_peers "$(node_log "$j")") " == *" $(ip_of "$i") "* ]]; do
      ((SECONDS < deadline)) || fail_node "$j" "still sees node $i as UP after ${TIMEOUT}s"
      sleep 0.5
    done
  done
  log "node $i is down and the other nodes see it"
}

cmd_down() {
  local i pid
  for i in $(seq "$N"); do # all at once, then wait for each
    if [[ "$ENGINE" != docker ]] && pid="$(pid_of "$i")"; then
      log "stopping node $i (pid $pid)"; kill -TERM "$pid" 2>/dev/null || true
    fi
  done
  for i in $(seq "$N" -1 1); do stop_node "$i" TERM quiet; done
  if [[ "$ENGINE" == docker ]]; then
    for i in $(seq "$N"); do docker rm -f "$(container "$i")" >/dev/null 2>&1 || true; done
  fi
  rm -f "$STATE/engine"
  log "cluster down"
}

prepare() {
  mkdir -p "$STATE"
  [[ -f "$STATE/engine" ]] || echo "$ENGINE" >"$STATE/engine"
  if [[ "$ENGINE" == cassandra ]]; then
    JAVA="$(find_java)" || { apt_install openjdk-17-jre-headless || apt_install default-jre-headless || true; JAVA="$(find_java)"; } \
      || die "Cassandra 5.0 needs Java 11 or 17 (set CQL_JAVA)"
    resolve_cassandra
  fi
}

node_arg() {
  [[ "${1:-}" =~ ^[0-9]+$ ]] && (($1 >= 1 && $1 <= N)) || die "node number 1..$N expected, got '${1:-}'"
  echo "$1"
}

cmd_up() {
  local t0=$SECONDS i
  prepare
  for i in $(seq "$N"); do
    if running "$i"; then log "node $i already running"; else start_node "$i"; fi
    wait_cql "$i"
    log "node $i serves CQL ($((SECONDS - t0))s)"
  done
  wait_mesh
  log "cluster up: $N nodes, ${DCS[*]} ($((SECONDS - t0))s)"
  echo "CQL_NODES=$CONTACTS"
}

# Exits 0 only when every node serves CQL.
cmd_status() {
  local i state pid out f serving=0
  printf '%-5s %-20s %-16s %-10s %s\n' node datacenter address pid cql
  for i in $(seq "$N"); do
    pid=-; state=down
    if [[ "$ENGINE" == docker ]]; then running "$i" && pid="$(container "$i")"
    else pid="$(pid_of "$i")" || pid=-; fi
    if [[ "$pid" != - ]]; then
      if out="$(serves_cql "$i")"; then
        read -r -a f <<<"$out"   # address, dc, rack, peers
        state="up (reports ${f[1]}/${f[2]}; peers: ${f[*]:3})"; serving=$((serving + 1))
        ((${#f[@]} > 3)) || state="up (reports ${f[1]}/${f[2]}; no peers)"
      else state="not serving"; fi
    fi
    printf '%-5s %-20s %-16s %-10s %s\n' "$i" "${DCS[$((i - 1))]}" "$(ip_of "$i"):$PORT" "$pid" "$state"
  done
  echo "engine=$ENGINE state=$STATE"
  ((serving == N))
}

cmd="${1:-}"
case "$cmd" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  stop-node)
    i="$(node_arg "${2:-}")"
    case "${3:-}" in "") stop_node "$i" ;; --kill) stop_node "$i" KILL ;; *) die "stop-node N [--kill]" ;; esac
    wait_seen_down "$i" ;;
  start-node)
    i="$(node_arg "${2:-}")"; prepare
    if running "$i"; then log "node $i already running"; else start_node "$i"; fi
    wait_cql "$i"; wait_mesh
    log "node $i up" ;;
  purge) cmd_down; rm -rf "$STATE"; log "removed $STATE" ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac
