#!/usr/bin/env bash
# check.sh - ctest deploy.alerts and deploy.dashboard (tests/CMakeLists.txt):
#   check.sh alerts SOURCE_DIR     promtool check rules + promtool test rules on
#                                  deploy/prometheus/alerts.yml, the rules'
#                                  structure (severity, summary, runbook anchors
#                                  in README.md, metric names), and that every
#                                  dashboard query parses
#   check.sh dashboard SOURCE_DIR  deploy/grafana/jwt-signer.json is valid JSON
#                                  with the panels and queries it should have
# Needs no built binary. promtool is in Debian's prometheus package
# (scripts/deps.sh).
set -euo pipefail

mode="${1:?usage: check.sh alerts|dashboard SOURCE_DIR}"
src="$(cd "${2:?usage: check.sh alerts|dashboard SOURCE_DIR}" && pwd)"
py=/usr/bin/python3
here="$(cd "$(dirname "$0")" && pwd)"

case "$mode" in
alerts)
    if ! command -v promtool >/dev/null; then
        echo "check.sh: promtool not found: install Debian's prometheus package (scripts/deps.sh)" >&2
        exit 1
    fi
    promtool check rules "$src/deploy/prometheus/alerts.yml"
    # promtool resolves rule_files against the test file's directory.
    promtool test rules "$src/deploy/prometheus/alerts_test.yml"
    "$py" "$here/check_deploy.py" rules "$src"
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    "$py" "$here/check_deploy.py" exprs "$src" "$tmp/dashboard_queries.yml"
    promtool check rules "$tmp/dashboard_queries.yml"
    ;;
dashboard)
    "$py" "$here/check_deploy.py" dashboard "$src"
    ;;
*)
    echo "check.sh: unknown mode $mode (alerts or dashboard)" >&2
    exit 2
    ;;
esac
