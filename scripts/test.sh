#!/usr/bin/env bash
# Runs every check and test: formatting, lints, unit, property and
# simulation tests, end-to-end tests (real node processes on loopback, a real
# three-datacenter CQL cluster, headless Chromium), and the chaos script's
# short form. This is the test command of the README, and what CI runs.
#
# On a machine that has only the toolchains it installs what the tests need
# (Debian packages: chromium, iptables, faketime, a JRE and Maven for the cluster; the
# browser test's npm packages) and starts the CQL cluster, stopping it again
# at the end if it started it.
#
#   scripts/test.sh            # everything
#   scripts/test.sh -- <args>  # extra arguments for `cargo test`
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }
have() { command -v "$1" >/dev/null 2>&1; }

apt_updated=0
apt_install() {
  if [[ $EUID -ne 0 ]] || ! have apt-get; then
    echo "missing $*: install it (tests that need it are skipped outside CI)" >&2
    return 0
  fi
  if [[ $apt_updated -eq 0 ]]; then
    apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

step "what the tests need"
have chromium || apt_install chromium
have iptables || apt_install iptables
have faketime || apt_install faketime
have promtool || apt_install prometheus
if [[ ! -d node/tests/dashboard/node_modules ]]; then
  (cd node/tests/dashboard && npm ci --no-audit --no-fund --silent)
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "build the tests and the release binaries once"
cargo test --workspace --locked --no-run
cargo build --workspace --release --locked

step "the docs check (scripts/check-docs.sh)"
scripts/check-docs.sh "${CARGO_TARGET_DIR:-target}/release/node"

step "the OpenAPI document: valid, and a generated client gets a 202 (scripts/check-openapi-client.sh)"
scripts/check-openapi-client.sh "${CARGO_TARGET_DIR:-target}/release/node"

step "the CQL cluster (scripts/cql-cluster.sh)"
started_cluster=0
if ! scripts/cql-cluster.sh status >/dev/null 2>&1; then
  started_cluster=1
fi
cluster_down() {
  if [[ $started_cluster -eq 1 ]]; then
    scripts/cql-cluster.sh down >/dev/null 2>&1 || true
  fi
}
trap cluster_down EXIT
cql_env="$(scripts/cql-cluster.sh up)" && [[ "$cql_env" == CQL_NODES=* ]] ||
  { echo "the CQL cluster did not come up (see .cql/node*/system.log)" >&2; exit 1; }
export "$cql_env"
echo "CQL_NODES=$CQL_NODES"

step "cargo test"
shift_args=()
if [[ "${1:-}" == "--" ]]; then shift; shift_args=("$@"); fi
cargo test --workspace --locked "${shift_args[@]}"

step "alert rules: promtool checks and unit tests, then on a real Prometheus (scripts/check-alerts.sh, scripts/test-alerts.sh)"
if have promtool && have prometheus; then
  scripts/check-alerts.sh
  scripts/test-alerts.sh
elif [[ "${CI:-}" == true ]]; then
  echo "promtool and prometheus are missing (Debian's prometheus package)" >&2
  exit 1
else
  echo "promtool or prometheus missing: alert rule checks skipped" >&2
fi

step "chaos, short form (scripts/chaos.sh --quick)"
scripts/chaos.sh --quick
