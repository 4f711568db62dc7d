# shellcheck shell=bash
# A run of the local mesh whose history `bot check` judges afterwards
# (scripts/chaos.sh, scripts/bench-failover.sh): the bot that drives it,
# snapshots of every node's matches, convergence measurements, the log of
# what was done to the mesh (partitions, kills, region outages), and the
# final check: nobody in two committed matches, every match the bot was
# told of committed, every node back in step, no accepted request lost.
# Source it after scripts/lib/mesh-lib.sh, from the repository root.
#
# Settings (set after sourcing):
#   HISTORY_DIR     where the run's files go (default $MESH_DIR); call
#                   history_files again after changing it
#   LIMIT           longest allowed time, in seconds, from the last heal to
#                   one digest everywhere (default 30)
#   SETTLE          seconds to wait after each heal's measurement (default 3)
#   SNAPSHOT_EVERY  pause() takes a match snapshot every this many seconds (4)
#
# Files: told.jsonl (every match notice the bot got), bot-summary.json,
# bot.out and bot.log, matches.json (the snapshot store), convergence.jsonl,
# partitions.jsonl (one line per fault: label, method, start and end in epoch
# seconds; a region outage adds `ready`, when its nodes were in sync again).

HISTORY_DIR="$MESH_DIR" LIMIT=30 SETTLE=3 SNAPSHOT_EVERY=4
BOT_PID=""
LAST_HEAL=""
RESTARTED=()   # nodes killed and started again: their counters started over

# Sets the paths of the run's files from HISTORY_DIR.
history_files() {
  mkdir -p "$HISTORY_DIR"
  TOLD="$HISTORY_DIR/told.jsonl" SUMMARY="$HISTORY_DIR/bot-summary.json"
  STORE="$HISTORY_DIR/matches.json" CONVERGENCE="$HISTORY_DIR/convergence.jsonl"
  PARTITIONS="$HISTORY_DIR/partitions.jsonl"
}
history_files

# A fresh mesh and a fresh history: the nodes' data, the relays' logs, the
# run's files (the bot's record is appended to otherwise). Certificates are
# kept. Call after mesh_plan, before mesh_up.
history_fresh() {
  local id
  for id in "${NODE_IDS[@]}"; do rm -rf "${MESH_DIR:?}/$id"; done
  rm -rf "$MESH_DIR/wan" "$TOLD" "$SUMMARY" "$STORE" "$CONVERGENCE" "$PARTITIONS"
  LAST_HEAL="" RESTARTED=()
}

now() { date +%s.%N; }

# --- looking at the nodes ---------------------------------------------------------

snapshot() { "$BOT_BIN" check snapshot "${NODE_URLS[@]}" --store "$STORE" || log "snapshot failed"; }

# converge LABEL SINCE [flags]: how long after SINCE every node held one
# digest (a timeout is reported by the check, not here).
converge() {
  "$BOT_BIN" check converge "${NODE_URLS[@]}" --label "$1" --since "$2" --timeout "$LIMIT" \
    --log "$CONVERGENCE" "${@:3}" || true
}

# pause SECS: sleeps, taking a match snapshot every SNAPSHOT_EVERY seconds,
# and stops at once if a node died that was not killed on purpose.
pause() {
  local t i
  for (( t = 1; t <= $1; t++ )); do
    sleep 1
    for i in "${!NODE_IDS[@]}"; do
      [[ -n "${NODE_PID[i]:-}" ]] && ! alive "${NODE_PID[i]}" &&
        die "node ${NODE_IDS[i]} died; see $MESH_DIR/${NODE_IDS[i]}/node.log"
    done
    (( t % SNAPSHOT_EVERY )) || snapshot
  done
}

# --- faults --------------------------------------------------------------------

# healed LABEL METHOD START [END [READY]]: a fault that ended at END
# (default: now): logs it (partitions.jsonl), measures convergence from END,
# snapshots, settles.
healed() {
  local label="$1" method="$2" start="$3" end="${4:-$(now)}" ready="${5:-}"
  LAST_HEAL="$end"
  printf '{"label":"%s","method":"%s","start":%s,"end":%s%s}\n' "$label" "$method" "$start" \
    "$end" "${ready:+,\"ready\":$ready}" >>"$PARTITIONS"
  converge "heal $label" "$end"
  snapshot
  pause "$SETTLE"
}

# node_outage I SECS: kill -9 node I, start it again SECS later.
node_outage() {
  local i="$1" secs="$2" id="${NODE_IDS[$1]}" start
  echo "-- kill -9 $id, restart it ${secs} s later"
  start="$(now)"
  kill -KILL "${NODE_PID[i]}"
  NODE_PID[i]=""
  pause "$secs"
  mesh_restart_node "$i"
  RESTARTED+=("$id")
  healed "kill -9 $id" "kill -9" "$start"
}

# region_outage REGION SECS: kill -9 every node of REGION, keep them down
# SECS, start them again on their data folders and wait until each is in
# sync with its peers. Logged with its kill (start), the restart (end: its
# nodes listen again) and their readiness (ready).
region_outage() {
  local region="$1" secs="$2" start end i
  echo "-- kill -9 every node of $region, start them again ${secs} s later"
  start="$(now)"
  mesh_kill_region "$region"
  pause "$secs"
  mesh_restart_region "$region"
  end="$(now)"
  mesh_wait_ready "$region"
  for i in "${!NODE_IDS[@]}"; do
    if [[ "${NODE_REGION[i]}" == "$region" ]]; then RESTARTED+=("${NODE_IDS[i]}"); fi
  done
  healed "kill -9 region $region" "kill -9" "$start" "$end" "$(now)"
}

# --- the bot and the verdict --------------------------------------------------------

# bot_start FLAGS...: the bot in simulation mode, recording every match
# notice and writing its summary for the check; stdout and stderr to
# bot.out and bot.log.
bot_start() {
  local bot=("$BOT_BIN" --record "$TOLD" --summary-json "$SUMMARY" "$@")
  echo "bot: ${bot[*]} (log: $HISTORY_DIR/bot.log)"
  "${bot[@]}" >"$HISTORY_DIR/bot.out" 2>"$HISTORY_DIR/bot.log" &
  BOT_PID=$!
}

# For a cleanup: stops the bot if it still runs.
bot_kill() {
  [[ -n "$BOT_PID" ]] && stop_pids INT 15 "$BOT_PID"
  BOT_PID=""
}

# Stops the bot (it posts nothing more and waits for its requests'
# outcomes), measures the final convergence meanwhile, then checks the
# whole run (`bot check check`, which prints the report). Returns the
# check's status.
history_finish() {
  local bot_status=0 status=0
  echo "-- stopping the bot"
  kill -INT "$BOT_PID" 2>/dev/null || true
  converge "final (bot stopped)" "${LAST_HEAL:-$(now)}" --final --restarted "${RESTARTED[@]}"
  wait "$BOT_PID" || bot_status=$?
  BOT_PID=""
  (( bot_status == 0 )) || log "the bot exited with status $bot_status; see $HISTORY_DIR/bot.log"
  "$BOT_BIN" check check "${NODE_URLS[@]}" --store "$STORE" --record "$TOLD" \
    --bot-summary "$SUMMARY" --convergence "$CONVERGENCE" --partitions "$PARTITIONS" \
    --regions "$REGIONS_DIR" --limit "$LIMIT" --restarted "${RESTARTED[@]}" || status=$?
  return "$status"
}
