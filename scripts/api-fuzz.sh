#!/usr/bin/env bash
# Schema-driven API fuzzing: starts the service binary (SQLite in a temporary directory, one
# worker, private networks and local sources refused, so a generated git URL cannot reach
# anything internal) and runs schemathesis (PyPI) against its /openapi.json. Fails if any
# request gets a server error (5xx; 503 only from the operations that document it, listed in
# scripts/schemathesis.toml), if an answer's body does not match the schema documented for its
# status (response_schema_conformance), if the service logs a panic, or if it stops answering
# /health.
#
#   scripts/api-fuzz.sh                     # 25 examples per operation, at most 90 s
#   API_FUZZ_EXAMPLES=200 API_FUZZ_SECONDS=900 scripts/api-fuzz.sh
#
# Reports (JUnit and a pytest file that reproduces each failure) go to $API_FUZZ_REPORT_DIR
# (default: a temporary directory, printed at the end).
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/certus-assurance/target}"
examples="${API_FUZZ_EXAMPLES:-25}"
seconds="${API_FUZZ_SECONDS:-90}"
venv="${CERTUS_TEST_SCHEMATHESIS_VENV:-$HOME/.cache/certus-assurance/schemathesis-venv}"
if [ -x "$venv/bin/schemathesis" ]; then
  schemathesis="$venv/bin/schemathesis"
elif command -v schemathesis >/dev/null 2>&1; then
  schemathesis=schemathesis
else
  echo "schemathesis is missing; run scripts/install-test-deps.sh" >&2
  exit 1
fi
for tool in curl python3; do
  command -v "$tool" >/dev/null 2>&1 || { echo "$tool is missing; run scripts/install-test-deps.sh" >&2; exit 1; }
done

cargo build --locked --quiet --bin certus-assurance
bin="$CARGO_TARGET_DIR/debug/certus-assurance"

work="$(mktemp -d)"
report_dir="${API_FUZZ_REPORT_DIR:-$work/report}"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"
env -i PATH="$PATH" HOME="$work" \
  CERTUS_ASSURANCE_LISTEN_ADDR="127.0.0.1:$port" \
  CERTUS_ASSURANCE_DATA_DIR="$work/data" \
  CERTUS_ASSURANCE_ALLOW_PRIVATE_NETWORKS=false \
  CERTUS_ASSURANCE_ALLOW_LOCAL_SOURCES=false \
  CERTUS_ASSURANCE_MAX_WORKERS=1 \
  CERTUS_ASSURANCE_MAX_QUEUE=100000 \
  CERTUS_ASSURANCE_SCAN_TIMEOUT_SECONDS=30 \
  CERTUS_ASSURANCE_LOG_FORMAT=json \
  "$bin" >"$work/service.log" 2>&1 &
pid=$!
stop() {
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  if [ -z "${API_FUZZ_REPORT_DIR:-}" ] && [ "${keep:-0}" = 0 ]; then rm -rf "$work"; fi
}
trap stop EXIT

for _ in $(seq 1 100); do
  curl -fsS "$base/health" >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { cat "$work/service.log" >&2; echo "the service did not start" >&2; exit 1; }
  sleep 0.2
done

echo "== schemathesis against $base/openapi.json ($examples examples per operation, at most ${seconds}s)"
status=0
# Run from the temporary directory: schemathesis keeps state in ./.schemathesis. One worker:
# with several threads, hypothesis's ast.parse of lambda sources can fail inside CPython 3.11
# ("AST constructor recursion depth mismatch"), an error of the tool, not of the service.
config="$PWD/scripts/schemathesis.toml"
(cd "$work" && "$schemathesis" --config-file "$config" run "$base/openapi.json" \
  --checks not_a_server_error,response_schema_conformance \
  --max-examples "$examples" \
  --max-time "$seconds" \
  --request-timeout 20 \
  --seed "${API_FUZZ_SEED:-20251213}" \
  --workers 1 \
  --no-color \
  --generation-database none \
  --report junit,pytest --report-dir "$report_dir") || status=$?

if grep -q '"panicked\|panicked at' "$work/service.log"; then
  grep 'panicked' "$work/service.log" | head -5 >&2
  echo "the service panicked while being fuzzed" >&2
  status=1
fi
if ! curl -fsS "$base/health" >/dev/null; then
  echo "the service stopped answering /health" >&2
  status=1
fi
if [ "$status" != 0 ]; then
  keep=1
  echo "API fuzzing failed; reproducers in $report_dir, service log in $work/service.log" >&2
fi
exit "$status"
