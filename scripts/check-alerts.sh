#!/usr/bin/env bash
# Checks the alert rules (deploy/prometheus/rules.yml): promtool's syntax
# and expression check, then the unit tests of rules_test.yml, which feed
# each rule synthetic series and assert when it fires and when it does not.
# promtool comes with Debian's `prometheus` package.
#
#   scripts/check-alerts.sh
set -euo pipefail
cd "$(dirname "$0")/.."

command -v promtool >/dev/null 2>&1 ||
  { echo "promtool not found: apt-get install prometheus" >&2; exit 1; }

promtool check rules deploy/prometheus/rules.yml
# The test file names its rule files relative to itself.
(cd deploy/prometheus && promtool test rules rules_test.yml)
