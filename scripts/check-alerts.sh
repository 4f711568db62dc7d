#!/usr/bin/env bash
# Checks the alert rules (deploy/prometheus/rules.yml): promtool's syntax
# and expression check, then the unit tests of rules_test.yml, which feed
# each rule synthetic series and assert when it fires and when it does not;
# and that every alert has its runbook section in docs/alerts.md, a
# runbook annotation pointing at it, and test cases. promtool comes with
# Debian's `prometheus` package.
#
#   scripts/check-alerts.sh
set -euo pipefail
cd "$(dirname "$0")/.."

command -v promtool >/dev/null 2>&1 ||
  { echo "promtool not found: apt-get install prometheus" >&2; exit 1; }

promtool check rules deploy/prometheus/rules.yml
# The test file names its rule files relative to itself.
(cd deploy/prometheus && promtool test rules rules_test.yml)

# Every alert: a section `## <alert>` in the runbook, its anchor in the
# rule's runbook annotation, and at least two test cases (one where it
# fires, one where it does not: promtool has checked what they assert).
rules=deploy/prometheus/rules.yml tests=deploy/prometheus/rules_test.yml runbook=docs/alerts.md
alerts=$(sed -n 's/^ *- alert: *\([A-Za-z0-9_]*\).*/\1/p' "$rules")
[[ -n "$alerts" ]] || { echo "no alerts found in $rules" >&2; exit 1; }
problems=0
for alert in $alerts; do
  anchor="$(tr '[:upper:]' '[:lower:]' <<<"$alert")"
  grep -qx "## $alert" "$runbook" ||
    { echo "$alert: no section '## $alert' in $runbook" >&2; problems=1; }
  grep -q "runbook: \"docs/alerts.md#$anchor\"" "$rules" ||
    { echo "$alert: no runbook annotation docs/alerts.md#$anchor in $rules" >&2; problems=1; }
  cases=$(grep -c "alertname: $alert\$" "$tests" || true)
  (( cases >= 2 )) ||
    { echo "$alert: $cases test case(s) in $tests; at least one firing and one not" >&2; problems=1; }
done
(( problems == 0 )) || exit 1
echo "every alert ($(wc -w <<<"$alerts")) has a runbook section and test cases"
