#!/usr/bin/env bash
# Runs test suites many times over and counts the runs that failed, to find
# tests that pass or fail by chance. Run it before a release, and after
# changing a test that waits on processes, ports or time.
#
#   scripts/flake-hunt.sh [RUNS] [SUITE...]
#
# SUITE is one of: types, devcluster, bot, bot-it, node-lib, node-it
# (default: the fast ones, types devcluster bot node-lib). node-lib skips
# the long simulation and model-check tests, which have a seeded run of their
# own (SIM_SEEDS). Each suite's test binary is built once, then run RUNS
# times (default 20); a failing run's output is kept under
# target/flake-hunt/.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=${1:-20}
shift || true
suites=("$@")
[[ ${#suites[@]} -gt 0 ]] || suites=(types devcluster bot node-lib)

# The executable cargo builds for one test target: `package target-kind
# target-name`.
test_binary() {
  cargo test --locked --no-run -p "$1" "--$2" ${3:+"$3"} --message-format=json 2>/dev/null |
    python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["executable"])' | tail -n 1
}

# The simulation and the model check are seeded and deterministic: their
# long runs are left to SIM_SEEDS.
node_lib_skips=(--skip testkit::simulation --skip testkit::model)

out=target/flake-hunt
mkdir -p "$out"
for suite in "${suites[@]}"; do
  args=()
  case $suite in
    types) bin=$(test_binary ride-types lib) ;;
    devcluster) bin=$(test_binary devcluster lib) ;;
    bot) bin=$(test_binary bot bin bot) ;;
    bot-it) bin=$(test_binary bot test it) ;;
    node-lib) bin=$(test_binary node lib); args=("${node_lib_skips[@]}") ;;
    node-it) bin=$(test_binary node test it) ;;
    *) echo "unknown suite $suite" >&2; exit 2 ;;
  esac
  [[ -x "$bin" ]] || { echo "no test binary for $suite" >&2; exit 1; }
  failed=0
  for ((i = 1; i <= runs; i++)); do
    if ! "$bin" -q "${args[@]}" >"$out/$suite.$i.log" 2>&1; then
      failed=$((failed + 1))
      echo "$suite: run $i failed (see $out/$suite.$i.log)"
    else
      rm -f "$out/$suite.$i.log"
    fi
  done
  echo "$suite: $failed of $runs runs failed"
done
