#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need, checks the alert rules
# and runs their unit tests with promtool, checks formatting and lints, then runs every unit and
# integration test (among them the dashboard conventions, the real Prometheus/Alertmanager run,
# the OTLP traces and the deploy manifests), then every fuzz target for a bounded time
# (scripts/fuzz.sh, FUZZ_SECONDS each) and schemathesis against /openapi.json
# (scripts/api-fuzz.sh). Starts a throwaway PostgreSQL server when none is usable at
# CERTUS_ASSURANCE_TEST_POSTGRES_URL, and lists the skipped tests at the end.
#
#   scripts/test.sh
#
# CARGO_TARGET_DIR defaults to a cache outside the clone so repeated runs build incrementally.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/certus-assurance/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# Tests that cannot run their subject fail; CERTUS_ASSURANCE_TEST_SKIP (a comma-separated list,
# see README.md) turns named ones into skips, and each skip is recorded here and listed at the end.
mkdir -p "$CARGO_TARGET_DIR"
export CERTUS_ASSURANCE_TEST_SKIPPED_FILE="${CERTUS_ASSURANCE_TEST_SKIPPED_FILE:-$CARGO_TARGET_DIR/skipped-tests.txt}"
: >"$CERTUS_ASSURANCE_TEST_SKIPPED_FILE"
pg_dir=""
finish() {
  status=$?
  if [ -n "$pg_dir" ]; then
    "$pg_bin/pg_ctl" -D "$pg_dir/data" -m immediate stop >/dev/null 2>&1 \
      || as_pg "$pg_bin/pg_ctl" -D "$pg_dir/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$pg_dir"
  fi
  if [ -s "$CERTUS_ASSURANCE_TEST_SKIPPED_FILE" ]; then
    echo "== skipped tests (CERTUS_ASSURANCE_TEST_SKIP=${CERTUS_ASSURANCE_TEST_SKIP:-})"
    sort -u "$CERTUS_ASSURANCE_TEST_SKIPPED_FILE"
  else
    echo "== no test skipped"
  fi
  exit "$status"
}
trap finish EXIT

# The PostgreSQL tests (tests/api/postgres.rs) need a server with a `test` database and trust
# authentication at CERTUS_ASSURANCE_TEST_POSTGRES_URL. When none is usable there, a throwaway
# cluster (Debian's postgresql, installed by scripts/install-test-deps.sh) runs in a temporary
# directory on a free loopback port for this run, and is stopped and removed at exit.
export CERTUS_ASSURANCE_TEST_POSTGRES_URL="${CERTUS_ASSURANCE_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
as_pg() {
  # initdb and postgres refuse to run as root: as root, run them as the package's `postgres` user.
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
if psql "$CERTUS_ASSURANCE_TEST_POSTGRES_URL" -Atqc 'SELECT 1' >/dev/null 2>&1; then
  echo "== PostgreSQL for the tests: $CERTUS_ASSURANCE_TEST_POSTGRES_URL"
else
  pg_bin="$( (ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null || true) | sort -V | tail -1 | xargs -r dirname)"
  if [ -z "$pg_bin" ]; then
    echo "no PostgreSQL at $CERTUS_ASSURANCE_TEST_POSTGRES_URL and no initdb under /usr/lib/postgresql; install Debian's postgresql" >&2
    exit 1
  fi
  pg_dir="$(mktemp -d)"
  pg_port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  [ "$(id -u)" -ne 0 ] || chown postgres: "$pg_dir"
  echo "== no PostgreSQL usable at $CERTUS_ASSURANCE_TEST_POSTGRES_URL: starting a throwaway one on 127.0.0.1:$pg_port ($pg_bin)"
  as_pg "$pg_bin/initdb" -D "$pg_dir/data" -U postgres --auth=trust -E UTF8 --no-sync >"$pg_dir/initdb.log" 2>&1 \
    || { cat "$pg_dir/initdb.log" >&2; exit 1; }
  as_pg "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $pg_port -k $pg_dir -c max_connections=200 -c fsync=off" start >/dev/null \
    || { cat "$pg_dir/server.log" >&2; exit 1; }
  psql "postgres://postgres@127.0.0.1:$pg_port/postgres" -v ON_ERROR_STOP=1 -qc 'CREATE DATABASE test'
  export CERTUS_ASSURANCE_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$pg_port/test"
fi

echo "== promtool check rules / test rules"
promtool check rules alerts/*.rules.yml
promtool test rules tests/alerts/*.test.yml
echo "== runbook links and deploy/kubernetes generated from alerts/ (with alerts/runbook-base-url) and dashboards/"
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
