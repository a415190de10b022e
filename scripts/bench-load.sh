#!/usr/bin/env bash
# Load benchmark: the load test of tests/api/load.rs (10,000 submissions in 10 bursts from 64
# concurrent clients on loopback, 2 workers, a queue of 200, 4 WebSocket streams open, /health and
# /stats probed every 50 ms) run in its benchmark mode, against a release build of the service
# binary. Prints the accepted/rejected counts, latency percentiles of submissions, /health and
# /stats, and the service's peak and final RSS (VmHWM, VmRSS from /proc/<pid>/status).
#
#   scripts/bench-load.sh                 # release build (what docs/benchmarks.md records)
#   BENCH_PROFILE=debug scripts/bench-load.sh   # the build the test suite uses
#
# Needs what the test suite needs (scripts/install-test-deps.sh: git for the git daemon).
# CARGO_TARGET_DIR defaults to the same cache as scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/certus-assurance/target}"
profile="${BENCH_PROFILE:-release}"
flags=()
if [ "$profile" = release ]; then
    flags+=(--release)
fi

echo "== $(date -u +%Y-%m-%dT%H:%M:%SZ) $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg), profile $profile"
cargo test "${flags[@]}" --locked --test api -- --exact load::load_benchmark --ignored --nocapture 2>&1 |
    grep -E '^load:|^test result|panicked'
