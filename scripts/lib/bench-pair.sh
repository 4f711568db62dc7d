# shellcheck shell=bash
# Nodes of one region peered over QUIC on loopback, for the benchmarks that
# measure replication between them (bench-catchup, bench-memory,
# bench-replication). Source it from the repository root, under
# `set -euo pipefail`; it makes $WORK (removed on exit, with every node
# still running), builds the release binaries and sets NODE and BOT.
#
#   pair_certs ID...                      mesh certificates and the token key
#   pair_start ID HTTP MESH PEER [FLAGS]  a node (admin on HTTP + 10) peered
#                                         with PEER (id=addr); extra node
#                                         flags last; sets PAIR_PID

WORK="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT INT TERM

cargo build --release --locked -p node -p bot >/dev/null 2>&1
RELEASE="${CARGO_TARGET_DIR:-target}/release"
NODE="$RELEASE/node" BOT="$RELEASE/bot"

pair_certs() {
  local args=() id
  for id in "$@"; do args+=(--node "$id"); done
  "$NODE" certs --dir "$WORK/certs" "${args[@]}" --ip 127.0.0.1 >/dev/null
  "$NODE" token-key >"$WORK/certs/token.keys"
}

pair_start() {
  local id=$1 http=$2 mesh=$3 peer=$4
  shift 4
  RUST_LOG=warn "$NODE" --node-id "$id" --region bench --listen "127.0.0.1:$http" \
    --admin-listen "127.0.0.1:$(( http + 10 ))" --mesh-listen "127.0.0.1:$mesh" --peer "$peer" \
    --certs "$WORK/certs" --token-keys-file "$WORK/certs/token.keys" \
    --data-dir "$WORK/$id" --mesh-ready-grace 1s "$@" >/dev/null 2>"$WORK/$id.log" &
  PAIR_PID=$!
}
