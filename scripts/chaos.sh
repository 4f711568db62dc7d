#!/usr/bin/env bash
# Partitions the local three-region mesh while the bot sends border-heavy
# traffic, heals it, kills nodes or a whole region and starts them again, and
# checks that nothing went wrong: nobody in two committed matches (on any
# node, or between nodes), every match the bot was told of committed with the
# same driver, every node back on one digest within a limit after the last
# heal, and no accepted request lost (a request whose owner was down until it
# expired counts as expired). Prints a report (partitions, requests, what
# adopters accepted for a dead region, matches, cross-border matches,
# convergence times, violations); exits non-zero on any violation.
#
#   scripts/chaos.sh [options] [-- bot flags...]
#
#   --quick              ~2 minutes: two single-region cuts and a split, 8 s each,
#                        a kill -9 and restart (as --kill), then the first
#                        region killed and started again (as --kill-region)
#   --hold D             how long each partition is held (default 10s)
#   --rounds N           single-region cuts, one region after another (default:
#                        one per region), before the split (every region alone)
#   --kill               also kill -9 a node, and restart it, after the split
#   --kill-region R      last, kill -9 every node of region R (a region outage)
#                        and keep them down for --adopt-after plus the request
#                        TTL plus 3 s: the nearest live region adopts R's area
#                        and every request R's nodes own expires meanwhile;
#                        then start them again on their data folders
#   --adopt-after D      the nodes' --adopt-after (default 10s)
#   --skew D             run the second region's node with its wall clock D
#                        ahead (faketime; monotonic timers stay real). Past
#                        the nodes' --max-clock-skew (1s) only liveness may
#                        degrade: every safety check still applies, and the
#                        convergence limit doubles (documents are dropped D
#                        apart, and claims are refused)
#   --partition HOW      iptables (root; packet drops on the regions' QUIC ports)
#                        or relay (cross-region QUIC through `node wan-relay`,
#                        cut by SIGSTOP); default: iptables when usable
#   --converge-limit D   longest allowed time from the last heal to one digest
#                        everywhere (default 30s; 60s with a --skew past 1s)
#   --request-ttl D      the nodes' --request-ttl (default 20s: requests expire
#                        and whole documents are dropped during the run; every
#                        accepted request must end matched, pending or expired)
#   --wan-delay D, --wan-jitter D, --wan-loss P
#                        the relays' path (relay partitions only; see mesh.sh)
#   --regions DIR        another region layout (e.g. nine regions from
#                        `node regions grid --rows 3 --cols 3 --out DIR`)
#   --area BOX           where the bot puts riders and drivers,
#                        min_lat,min_lon,max_lat,max_lon (default: around
#                        the shipped regions' junction; with --regions,
#                        every region)
#
# The mesh uses the regions' ports (so a running scripts/mesh.sh must be
# stopped first) and keeps its state in $MESH_DIR (default .mesh/chaos): node
# logs and the run's history (scripts/lib/history-lib.sh: told.jsonl,
# bot-summary.json, matches.json, convergence.jsonl, partitions.jsonl). Every iptables rule it
# adds carries the comment "ride-chaos" and is removed on exit, Ctrl-C
# included.
set -euo pipefail
cd "$(dirname "$0")/.."
MESH_DIR="${MESH_DIR:-.mesh/chaos}"
source scripts/lib/mesh-lib.sh
source scripts/lib/history-lib.sh

HOLD=10 ROUNDS="" KILL=0 HOW=auto LIMIT="" TTL=20s SKEW= AREA= ADOPT_AFTER=10s
KILL_REGION="" QUICK=0 WARMUP=5
flag() {
  case "$1" in
    --quick) HOLD=8 ROUNDS=2 WARMUP=4 SETTLE=2 KILL=1 QUICK=1 ;;
    --kill) KILL=1 ;;
    *) return 1 ;;
  esac
}
option() {
  case "$1" in
    --hold) HOLD="$(dur_secs "$2")" ;;
    --rounds) ROUNDS="$2" ;;
    --partition) HOW="$2" ;;
    --converge-limit) LIMIT="$(dur_secs "$2")" ;;
    --request-ttl) TTL="$2" ;;
    --skew) SKEW="$2" ;;
    --wan-delay) MESH_WAN_DELAY="$2" ;;
    --wan-jitter) MESH_WAN_JITTER="$2" ;;
    --wan-loss) MESH_WAN_LOSS="$2" ;;
    --regions) REGIONS_DIR="$2" ;;
    --area) AREA="$2" ;;
    --kill-region) KILL_REGION="$2" ;;
    --adopt-after) ADOPT_AFTER="$2" ;;
    *) return 1 ;;
  esac
}
mesh_parse_args "$@"
[[ -z "$ROUNDS" || "$ROUNDS" =~ ^[0-9]+$ ]] || die "--rounds must be a number"

CHAOS_TAG=ride-chaos

# --- how to partition --------------------------------------------------------------

iptables_usable() {
  (( EUID == 0 )) && command -v iptables >/dev/null && iptables -S INPUT >/dev/null 2>&1
}
case "$HOW" in
  auto)
    if iptables_usable; then HOW=iptables; else
      HOW=relay
      echo "note: packet-level partitions (iptables on lo) need root and iptables;" \
        "$( (( EUID == 0 )) && echo "iptables is missing or unusable here" || echo "not running as root" )," \
        "so cross-region QUIC goes through 'node wan-relay' processes and a partition" \
        "freezes them (SIGSTOP) until it heals (SIGCONT)."
    fi ;;
  iptables) iptables_usable || die "--partition iptables needs root and a working iptables" ;;
  relay) ;;
  *) die "--partition is iptables or relay" ;;
esac
[[ "$HOW" == relay ]] && MESH_WAN=1

# Removes every rule tagged ride-chaos, in any chain (also any left by an
# earlier run that was killed with SIGKILL).
iptables_heal() {
  local rule
  command -v iptables >/dev/null || return 0
  while read -r -a rule; do
    [[ "${rule[0]:-}" == -A ]] || continue
    rule[0]=-D
    iptables "${rule[@]}" || log "could not remove iptables rule: ${rule[*]}"
  done < <(iptables -S 2>/dev/null | grep -e "--comment $CHAOS_TAG" || true)
}

# Drops every datagram to or from the QUIC ports of the given regions' nodes:
# each of them is cut off from every other node.
iptables_cut() {
  local r i port dir
  for r in "$@"; do
    for i in "${!NODE_IDS[@]}"; do
      [[ "${NODE_REGION[i]}" == "$r" ]] || continue
      port="${NODE_QUIC[i]##*:}"
      for dir in --dport --sport; do
        iptables -I INPUT -i lo -p udp "$dir" "$port" -m comment --comment "$CHAOS_TAG" -j DROP
      done
    done
  done
}

# Freezes every relay that touches one of the given regions (all relays
# cross regions, so each such region is cut off).
FROZEN=()
relay_cut() {
  local r k i j
  for k in "${RELAY_KEYS[@]}"; do
    i="${k%>*}" j="${k#*>}"
    for r in "$@"; do
      if [[ "${NODE_REGION[i]}" == "$r" || "${NODE_REGION[j]}" == "$r" ]]; then
        kill -STOP "${RELAY_PID[$k]}"; FROZEN+=("$k"); break
      fi
    done
  done
}
relay_heal() {
  local k
  for k in "${FROZEN[@]}"; do kill -CONT "${RELAY_PID[$k]}" 2>/dev/null || true; done
  FROZEN=()
}

cut() { if [[ "$HOW" == iptables ]]; then iptables_cut "$@"; else relay_cut "$@"; fi; }
heal() { if [[ "$HOW" == iptables ]]; then iptables_heal; else relay_heal; fi; }

# --- cleanup -------------------------------------------------------------------

cleanup() {
  trap - INT TERM EXIT
  heal
  [[ "$HOW" == iptables ]] || iptables_heal   # rules from an earlier run, if any
  bot_kill
  mesh_stop_all
}
trap 'log "interrupted: stopping everything"; cleanup; exit 130' INT
trap 'log "terminated: stopping everything"; cleanup; exit 143' TERM
trap cleanup EXIT

# --- the run -----------------------------------------------------------------

mesh_plan
NODE_EXTRA+=(--match-retention 15m --request-ttl "$TTL" --adopt-after "$ADOPT_AFTER")
if [[ -z "$LIMIT" ]]; then
  LIMIT=30
  [[ -n "$SKEW" ]] && (( $(dur_secs "$SKEW") > 1 )) && LIMIT=60
fi
if [[ -n "$SKEW" ]]; then
  # libfaketime preloaded through env, which execs the node: a kill -9
  # reaches the node itself (the faketime wrapper would fork and survive).
  FAKETIME_LIB="$(ls /usr/lib/*/faketime/libfaketime.so.1 2>/dev/null | head -n 1)"
  [[ -n "$FAKETIME_LIB" ]] || die "--skew needs libfaketime (apt-get install faketime)"
  NODE_WRAP[1]="env LD_PRELOAD=$FAKETIME_LIB FAKETIME=+$(dur_secs "$SKEW")s FAKETIME_DONT_FAKE_MONOTONIC=1"
fi
(( ${#REGION_IDS[@]} >= 2 )) || die "chaos needs at least two regions"
: "${ROUNDS:=${#REGION_IDS[@]}}"
if (( QUICK )); then : "${KILL_REGION:=${REGION_IDS[0]}}"; fi
if [[ -n "$KILL_REGION" && " ${REGION_IDS[*]} " != *" $KILL_REGION "* ]]; then
  die "--kill-region: no region $KILL_REGION (regions: ${REGION_IDS[*]})"
fi
# A region outage outlasts the adoption and the TTL of every request its
# nodes own, so the adopter serves the area for a whole TTL.
REGION_DOWN=$(( $(dur_secs "$ADOPT_AFTER") + $(dur_secs "$TTL") + 3 ))

iptables_heal
history_fresh

# partition LABEL REGION...: cut the regions off, hold, heal, measure.
partition() {
  local label="$1" start
  shift
  echo "-- $label: held ${HOLD}s"
  start="$(now)"
  cut "$@"
  pause "$HOLD"
  heal
  healed "$label" "$HOW" "$start"
}

echo "chaos: partitions by $HOW, holds ${HOLD}s, $ROUNDS single-region cut(s), then a split$( ((KILL)) && echo ", then kill -9 and restart")$([[ -n "$KILL_REGION" ]] && echo ", then $KILL_REGION down for ${REGION_DOWN}s (adopt after $ADOPT_AFTER)")$([[ -n "$SKEW" ]] && echo "; ${NODE_IDS[1]}'s clock $SKEW ahead"); request TTL $TTL"
mesh_up
mesh_print_layout
converge "start" "$(now)"

# Border-heavy: the shipped regions meet at latitude 23.78 and longitude
# 90.40. Another layout gets traffic over all of it.
if [[ -z "$AREA" && "$REGIONS_DIR" == regions ]]; then AREA="23.76,90.38,23.80,90.42"; fi
# Once stopped, the bot waits for every accepted request's outcome (its
# match, or its expiry: the TTL, plus a skewed owner's lead, plus slack), so
# that the check accounts for each one, even after a restart resets a
# node's counters.
SETTLE_FOR="$(( $(dur_secs "$TTL") + $([[ -n "$SKEW" ]] && dur_secs "$SKEW" || echo 0) + 10 ))s"
bot=(--regions "$REGIONS_DIR" --settle "$SETTLE_FOR")
[[ -z "$AREA" ]] || bot+=(--area "$AREA")
# Few enough riders and drivers that a snapshot every few seconds sees every
# match (a node lists at most 1000); override with -- --riders N --drivers N.
has_flag --riders "${BOT_ARGS[@]}" || bot+=(--riders 20)
has_flag --drivers "${BOT_ARGS[@]}" || bot+=(--drivers 20)
bot+=("${BOT_ARGS[@]}")
bot_start "${bot[@]}"
pause "$WARMUP"

for (( n = 0; n < ROUNDS; n++ )); do
  r="${REGION_IDS[n % ${#REGION_IDS[@]}]}"
  others=""
  for o in "${REGION_IDS[@]}"; do [[ "$o" == "$r" ]] || others+=" $o"; done
  partition "isolate $r from$others" "$r"
done
partition "split: every region alone" "${REGION_IDS[@]}"

if (( KILL )); then node_outage $(( 1 % ${#NODE_IDS[@]} )) 3; fi
if [[ -n "$KILL_REGION" ]]; then region_outage "$KILL_REGION" "$REGION_DOWN"; fi

status=0
history_finish || status=$?
cleanup
left="$(iptables -S 2>/dev/null | grep -c -e "--comment $CHAOS_TAG" || true)"
[[ "${left:-0}" == 0 ]] || { log "iptables rules tagged $CHAOS_TAG remain: $left"; status=1; }
exit "$status"
