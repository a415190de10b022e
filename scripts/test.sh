#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need, checks the alert rules
# and runs their unit tests with promtool, checks formatting and lints, then runs every unit and
# integration test (among them the dashboard conventions, the real Prometheus/Alertmanager run,
# the OTLP traces and the deploy manifests), then every fuzz target for a bounded time
# (scripts/fuzz.sh, FUZZ_SECONDS each) and schemathesis against /openapi.json
# (scripts/api-fuzz.sh).
#
#   scripts/test.sh
#
# CARGO_TARGET_DIR defaults to a cache outside the clone so repeated runs build incrementally.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/certus-assurance/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

echo "== promtool check rules / test rules"
promtool check rules alerts/*.rules.yml
promtool test rules tests/alerts/*.test.yml
echo "== deploy/kubernetes generated from alerts/ and dashboards/"
scripts/generate-kubernetes-monitoring.sh --check
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --all-targets --locked -- --test-threads "${TEST_THREADS:-4}"
echo "== fuzz targets (scripts/fuzz.sh, ${FUZZ_SECONDS:-20}s each)"
scripts/fuzz.sh
echo "== schemathesis against /openapi.json (scripts/api-fuzz.sh)"
scripts/api-fuzz.sh
