#!/usr/bin/env bash
# Scanning benchmarks: secrets throughput against detect-secrets on a generated corpus, and SBOM +
# OSV matching on a large lockfile set. Prints a markdown section for docs/benchmarks.md.
#
#   scripts/bench-scanning.sh                 # 200 MiB corpus, 10k components, 40k OSV records
#   BENCH_CORPUS_MB=50 scripts/bench-scanning.sh
#   BENCH_OUT=/tmp/scanning.md scripts/bench-scanning.sh
#
# Needs detect-secrets on PATH (scripts/install-test-deps.sh installs it), or
# BENCH_SKIP_DETECT_SECRETS=1. detect-secrets takes several minutes per 10 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/certus-assurance/target}"
if [[ "${BENCH_SKIP_DETECT_SECRETS:-0}" != 1 ]] && ! command -v detect-secrets >/dev/null 2>&1; then
    echo "detect-secrets is not installed; run scripts/install-test-deps.sh or set BENCH_SKIP_DETECT_SECRETS=1" >&2
    exit 1
fi
exec cargo bench --locked --bench scanning
