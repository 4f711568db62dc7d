#!/usr/bin/env bash
# End to end, the alert rules on a real Prometheus: starts the local mesh
# with `scripts/mesh.sh --prometheus --no-bot` (in a temporary folder, with
# a --duration as a safety stop), waits until Prometheus scrapes every node,
# kills one node with `kill -9`, and asserts through Prometheus's HTTP API
# that RideNodeDown goes pending and then firing for that node; then starts
# the node again (`devcluster start-node`) and asserts that the alert
# resolves. Each state must be reached before a deadline (a deadline to
# fail, not a speed to meet); on failure it prints what it saw, on success
# the rule's for: and the times it observed. Everything it started is
# stopped on exit.
#
#   scripts/test-alerts.sh [NODE]    # NODE: the node to kill (default: the first)
#
# Needs Debian's `prometheus`, curl, python3 and the release binaries
# (node, bot, devcluster in ${CARGO_TARGET_DIR:-target}/release, or
# MESH_BIN), which scripts/test.sh builds first.
set -euo pipefail
cd "$(dirname "$0")/.."

VICTIM="${1:-}"
ALERT=RideNodeDown
# Deadlines, in seconds: generous, for a loaded CI machine.
START_LIMIT=120     # the mesh ready and Prometheus scraping every node
STATE_LIMIT=180     # each of pending, firing and resolved, from the step before

have() { command -v "$1" >/dev/null 2>&1; }
for tool in prometheus curl python3; do
  have "$tool" || { echo "test-alerts: '$tool' is missing (apt-get install prometheus curl python3)" >&2; exit 1; }
done
MESH_BIN="${MESH_BIN:-$(cd "${CARGO_TARGET_DIR:-target}" 2>/dev/null && pwd)/release}"
for bin in node bot devcluster; do
  [[ -x "$MESH_BIN/$bin" ]] ||
    { echo "test-alerts: no $MESH_BIN/$bin; build first (cargo build --release --locked)" >&2; exit 1; }
done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/test-alerts.XXXXXX")"
MESH_DIR="$WORK/mesh"
MESH_OUT="$WORK/mesh.out"
MESH_PID=""
OK=0

elapsed() { python3 -c 'import sys, time; print(f"{time.time() - float(sys.argv[1]):.1f}")' "$1"; }
now() { date +%s.%N; }

cleanup() {
  trap - EXIT INT TERM
  if [[ -n "$MESH_PID" ]] && kill -0 "$MESH_PID" 2>/dev/null; then
    # mesh.sh stops Prometheus and the mesh on SIGTERM.
    kill -TERM "$MESH_PID" 2>/dev/null || true
    for (( i = 0; i < 600; i++ )); do
      kill -0 "$MESH_PID" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$MESH_PID" 2>/dev/null; then
      echo "test-alerts: mesh.sh did not stop in 60 s; killing it and what it recorded" >&2
      kill -KILL "$MESH_PID" 2>/dev/null || true
      "$MESH_BIN/devcluster" --dir "$MESH_DIR" down >/dev/null 2>&1 || true
      [[ -s "$MESH_DIR/prometheus.pid" ]] && kill -KILL "$(cat "$MESH_DIR/prometheus.pid")" 2>/dev/null
    fi
    wait "$MESH_PID" 2>/dev/null || true
  fi
  if (( OK )); then
    rm -rf "$WORK"
  else
    echo "test-alerts: kept $WORK (mesh.out, mesh/prometheus.log, mesh/<node>/node.log)" >&2
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail() {
  echo "test-alerts: FAILED: $*" >&2
  echo "--- last lines of scripts/mesh.sh's output" >&2
  tail -n 30 "$MESH_OUT" >&2 || true
  if [[ -s "$MESH_DIR/prometheus.log" ]]; then
    echo "--- last lines of prometheus.log" >&2
    tail -n 10 "$MESH_DIR/prometheus.log" >&2
  fi
  exit 1
}

# Prometheus's HTTP API, read with python3 (standard library only).
api() { curl -fsS --max-time 5 "$PROM/api/v1/$1"; }

# "<up> <total>": the scrape targets of job ride-node, and how many are up.
targets_up() {
  api targets | python3 -c '
import json, sys
targets = [t for t in json.load(sys.stdin)["data"]["activeTargets"]
           if t["labels"].get("job") == "ride-node"]
print(sum(t["health"] == "up" for t in targets), len(targets))'
}

# The state of $ALERT for node $1 (pending, firing or none), then every
# active alert as "name{instance}=state", for the record.
alert_state() {
  api alerts | python3 -c '
import json, sys
alert, node = sys.argv[1], sys.argv[2]
alerts = json.load(sys.stdin)["data"]["alerts"]
state = "none"
for a in alerts:
    if a["labels"].get("alertname") == alert and a["labels"].get("instance") == node:
        state = a["state"]
seen = " ".join(sorted("%s{%s}=%s" % (a["labels"].get("alertname"), a["labels"].get("instance", ""), a["state"])
                       for a in alerts))
print(state, seen or "(no alerts)")' "$ALERT" "$1"
}

# The rule's for:, in seconds, as Prometheus loaded it.
rule_for() {
  api rules | python3 -c '
import json, sys
for group in json.load(sys.stdin)["data"]["groups"]:
    for rule in group["rules"]:
        if rule.get("name") == sys.argv[1]:
            print(int(rule.get("duration", 0)))
            sys.exit(0)
sys.exit(1)' "$ALERT"
}

# wait_state NODE WANT LIMIT: polls until the alert's state is WANT; fails
# after LIMIT seconds with every state seen on the way.
wait_state() {
  local node="$1" want="$2" limit="$3" deadline line state history=""
  deadline=$(( SECONDS + limit ))
  while :; do
    line="$(alert_state "$node" 2>/dev/null)" || line="(Prometheus did not answer)"
    state="${line%% *}"
    [[ "$state" == "$want" ]] && return 0
    [[ "$history" == *"$line"* ]] || history+="  $(date +%T) $line"$'\n'
    (( SECONDS < deadline )) ||
      fail "$ALERT for $node not $want within ${limit}s; alerts seen (first time each):
$history"
    kill -0 "$MESH_PID" 2>/dev/null || fail "scripts/mesh.sh exited while waiting for $ALERT $want"
    sleep 0.5
  done
}

echo "test-alerts: the mesh with Prometheus in $WORK"
MESH_DIR="$MESH_DIR" MESH_BIN="$MESH_BIN" \
  scripts/mesh.sh --prometheus --no-bot --duration 6m >"$MESH_OUT" 2>&1 &
MESH_PID=$!

started=$SECONDS
until [[ -s "$MESH_DIR/prometheus.url" ]]; do
  kill -0 "$MESH_PID" 2>/dev/null || fail "scripts/mesh.sh --prometheus exited before Prometheus was up"
  (( SECONDS - started < START_LIMIT )) || fail "no Prometheus within ${START_LIMIT}s"
  sleep 0.5
done
PROM="$(cat "$MESH_DIR/prometheus.url")"
eval "$("$MESH_BIN/devcluster" --dir "$MESH_DIR" env)"
VICTIM="${VICTIM:-${NODE_IDS[0]}}"
[[ " ${NODE_IDS[*]} " == *" $VICTIM "* ]] || fail "no node $VICTIM (nodes: ${NODE_IDS[*]})"
echo "test-alerts: Prometheus at $PROM; nodes: ${NODE_IDS[*]}"

seen=""
until [[ "$seen" == "${#NODE_IDS[@]} ${#NODE_IDS[@]}" ]]; do
  (( SECONDS - started < START_LIMIT )) ||
    fail "Prometheus did not scrape every node within ${START_LIMIT}s (up, targets: ${seen:-none})"
  kill -0 "$MESH_PID" 2>/dev/null || fail "scripts/mesh.sh exited before every target was up"
  sleep 0.5
  seen="$(targets_up 2>/dev/null)" || seen=""
done
FOR="$(rule_for)" || fail "Prometheus has not loaded the rule $ALERT"
state="$(alert_state "$VICTIM")"
[[ "${state%% *}" == none ]] || fail "$ALERT is ${state%% *} for $VICTIM before any kill: $state"
echo "test-alerts: every node scraped (${#NODE_IDS[@]}); $ALERT has for: ${FOR}s"

pid="$(cat "$MESH_DIR/pids/$VICTIM.pid")"
echo "test-alerts: kill -9 $VICTIM (pid $pid)"
killed_at="$(now)"
kill -9 "$pid"

wait_state "$VICTIM" pending "$STATE_LIMIT"
pending_after="$(elapsed "$killed_at")"
echo "test-alerts: $ALERT pending ${pending_after}s after the kill"
wait_state "$VICTIM" firing "$STATE_LIMIT"
firing_after="$(elapsed "$killed_at")"
echo "test-alerts: $ALERT firing ${firing_after}s after the kill"

echo "test-alerts: starting $VICTIM again (devcluster start-node)"
restart_at="$(now)"
"$MESH_BIN/devcluster" --dir "$MESH_DIR" start-node "$VICTIM" >>"$MESH_OUT" 2>&1 ||
  fail "devcluster start-node $VICTIM failed"
ready_after="$(elapsed "$restart_at")"
wait_state "$VICTIM" none "$STATE_LIMIT"
resolved_after="$(elapsed "$restart_at")"

interval="$(sed -n 's/^ *scrape_interval: *//p' "$MESH_DIR/prometheus.yml")"
OK=1
cat <<EOF
test-alerts: passed. $ALERT (for: ${FOR}s; scrape and evaluation every $interval) after kill -9 $VICTIM:
  pending   ${pending_after}s after the kill
  firing    ${firing_after}s after the kill
  resolved  ${resolved_after}s after start-node (the node was ready ${ready_after}s after it)
EOF
