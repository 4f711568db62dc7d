#!/usr/bin/env bash
# Runs every check and test: formatting, lints, unit, property and
# end-to-end tests (real node processes on loopback). This is the test
# command of the README, and what CI runs.
#
#   scripts/test.sh            # everything
#   scripts/test.sh -- <args>  # extra arguments for `cargo test`
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "build the tests once"
cargo test --workspace --locked --no-run

step "cargo test"
shift_args=()
if [[ "${1:-}" == "--" ]]; then shift; shift_args=("$@"); fi
cargo test --workspace --locked "${shift_args[@]}"
