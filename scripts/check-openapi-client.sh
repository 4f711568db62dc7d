#!/usr/bin/env bash
# A client generated from the node's OpenAPI document by a standard
# generator (openapi-python-client, from PyPI) posts a rider to a real node
# and gets a 202; the document also passes openapi-spec-validator. This is
# what a client developer does with `docs/openapi.json`.
#
#   scripts/check-openapi-client.sh [NODE_BINARY]   default target/release/node
#
# The generator and the validator go into a virtualenv under target/ (made
# once, reused). Part of the test command.
set -euo pipefail
cd "$(dirname "$0")/.."

NODE="${1:-${CARGO_TARGET_DIR:-target}/release/node}"
VENV="$(realpath -m "${CARGO_TARGET_DIR:-target}/openapi-venv")"
WORK="$(mktemp -d)"
node_pid=""
cleanup() {
  [[ -n "$node_pid" ]] && kill -TERM "$node_pid" 2>/dev/null && wait "$node_pid" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

if [[ ! -x "$VENV/bin/openapi-python-client" ]]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet openapi-python-client==0.29.1 openapi-spec-validator==0.9.0
fi

"$NODE" openapi >"$WORK/openapi.json"
cmp -s "$WORK/openapi.json" docs/openapi.json ||
  { echo "docs/openapi.json is not what \`node openapi\` prints: regenerate it" >&2; exit 1; }
"$VENV/bin/openapi-spec-validator" "$WORK/openapi.json"

(cd "$WORK" && "$VENV/bin/openapi-python-client" generate --path openapi.json \
  --meta none --output-path client >generate.log 2>&1) ||
  { cat "$WORK/generate.log" >&2; echo "the generator failed" >&2; exit 1; }

"$NODE" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --regions regions \
  --region dhaka-north --data-dir "$WORK/data" --ready-file "$WORK/ready.json" \
  2>"$WORK/node.log" &
node_pid=$!
for _ in $(seq 100); do [[ -s "$WORK/ready.json" ]] && break; sleep 0.1; done
[[ -s "$WORK/ready.json" ]] || { cat "$WORK/node.log" >&2; echo "the node did not start" >&2; exit 1; }
base="http://$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["http"])' "$WORK/ready.json")"

PYTHONPATH="$WORK" "$VENV/bin/python" - "$base" <<'PY'
import sys

from client import Client
from client.api.requests import post_rider
from client.models import Accepted, Position, RiderRequest

answer = post_rider.sync_detailed(
    client=Client(base_url=sys.argv[1]),
    body=RiderRequest(
        name="Nadia",
        position=Position(lat=23.7925, lon=90.4078),
        destination=Position(lat=23.7330, lon=90.4172),
    ),
)
assert answer.status_code == 202, f"expected 202, got {answer.status_code}: {answer.content!r}"
assert isinstance(answer.parsed, Accepted), answer.parsed
assert answer.parsed.region == "dhaka-north", answer.parsed.region
print(f"generated client: POST /rider -> 202, id {answer.parsed.id}, region {answer.parsed.region}")
PY
