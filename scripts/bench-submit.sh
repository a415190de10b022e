#!/usr/bin/env bash
# Submissions: accepted submissions/s with workers off, and submission latency with two workers
# scanning, for two service binaries measured alternately in one run (so both see the same
# machine noise). Typically the previous revision against the current one:
#
#   BEFORE_BIN=/path/to/old/certus-assurance AFTER_BIN=target/release/certus-assurance \
#       scripts/bench-submit.sh
#
# Each measurement starts the binary on a fresh data directory pinned to CPU 0 (taskset) and runs
# `wrk -t1 -c8 -d<BENCH_DURATION>s -s benches/wrk/submit.lua` pinned to CPU 1:
#   workers off: CERTUS_ASSURANCE_MAX_WORKERS=0, a queue bound of 10,000,000; every answer must
#                be 202; accepted/s = 202s / wrk's duration;
#   2 workers:   CERTUS_ASSURANCE_MAX_WORKERS=2; each submission names a two-file repository
#                over file:// (local sources allowed), so both workers scan while submissions
#                arrive; p50/p99 of the submissions as wrk measures them;
#   PostgreSQL:  (BENCH_PG_URL set, e.g. postgres://postgres@127.0.0.1:5432/test) workers off on
#                a fresh schema of that database per run (dropped after it; needs psql).
# Rounds alternate the order (before, after / after, before). Prints one line per run and the
# median of each figure, with the load average.
#
# Knobs: BENCH_ROUNDS (3), BENCH_DURATION (10), BENCH_PORT (18230), BENCH_PIN (1), BENCH_PG_URL.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${BEFORE_BIN:?set BEFORE_BIN to the release binary of the previous revision}"
: "${AFTER_BIN:?set AFTER_BIN to the release binary to compare}"
ROUNDS=${BENCH_ROUNDS:-3}
DURATION=${BENCH_DURATION:-10}
PORT=${BENCH_PORT:-18230}
PIN=${BENCH_PIN:-1}
for tool in wrk curl git taskset awk; do
    command -v "$tool" >/dev/null || { echo "$tool is required" >&2; exit 1; }
done
[[ -x "$BEFORE_BIN" && -x "$AFTER_BIN" ]] || { echo "BEFORE_BIN and AFTER_BIN must be executables" >&2; exit 1; }

TMP=$(mktemp -d /tmp/certus-bench-submit.XXXXXX)
PID=""
cleanup() {
    if [[ -n "$PID" ]] && kill -0 "$PID" 2>/dev/null; then
        kill -TERM "$PID"
        wait "$PID" 2>/dev/null || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT

service_pin=()
wrk_pin=()
if [[ "$PIN" == 1 ]]; then
    service_pin=(taskset -c 0)
    wrk_pin=(taskset -c 1)
fi

# A two-file repository, scanned by the `light` profile.
git init -q -b main "$TMP/repo"
printf 'print("hello")\n' >"$TMP/repo/app.py"
printf '# demo\n' >"$TMP/repo/README.md"
git -C "$TMP/repo" add -A
git -C "$TMP/repo" -c user.name=bench -c user.email=bench@example.com commit -qm init
LOCAL_BODY="{\"workspace_id\":\"bench\",\"component_id\":\"c\",\"assessment_id\":\"a\",\"git_url\":\"file://$TMP/repo\",\"branch\":\"main\",\"profile\":\"light\"}"

# run BIN WORKERS [pg] -> prints "accepted_per_s p50_ms p99_ms other"
run() {
    local bin=$1 workers=$2 store=${3:-sqlite} data="$TMP/data-$RANDOM" schema="" url=""
    mkdir -p "$data"
    if [[ $store == pg ]]; then
        schema="certus_bench_submit_$RANDOM$RANDOM"
        psql "$BENCH_PG_URL" -q -v ON_ERROR_STOP=1 -c "CREATE SCHEMA $schema" >/dev/null
        url="$BENCH_PG_URL?options=-csearch_path%3D$schema"
    fi
    (
        [[ -n $url ]] && export CERTUS_ASSURANCE_DATABASE_URL="$url"
        export CERTUS_ASSURANCE_DATA_DIR="$data"
        export CERTUS_ASSURANCE_MAX_WORKERS="$workers"
        export CERTUS_ASSURANCE_MAX_QUEUE=10000000
        export CERTUS_ASSURANCE_ALLOW_LOCAL_SOURCES=true
        export CERTUS_ASSURANCE_LOG_LEVEL=warn
        export CERTUS_ASSURANCE_LISTEN_ADDR="127.0.0.1:$PORT"
        exec "${service_pin[@]}" "$bin" serve
    ) >"$data.log" 2>&1 &
    PID=$!
    for _ in $(seq 1 150); do
        curl -fsS --max-time 2 "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break
        sleep 0.2
    done
    local body=""
    ((workers > 0)) && body=$LOCAL_BODY
    BENCH_SUBMIT_BODY=${body:-} timeout $((DURATION + 30)) "${wrk_pin[@]}" wrk -t1 -c8 -d"${DURATION}s" \
        -s benches/wrk/submit.lua "http://127.0.0.1:$PORT/v1/security-scans" >"$data.wrk" 2>&1
    kill -TERM "$PID"
    wait "$PID" 2>/dev/null || true
    PID=""
    [[ -n $schema ]] && psql "$BENCH_PG_URL" -q -c "DROP SCHEMA $schema CASCADE" >/dev/null
    local line
    line=$(grep '^BENCH_SUBMIT' "$data.wrk")
    f() { grep -o "\b$1=[0-9]*" <<<"$line" | cut -d= -f2; }
    awk -v a="$(f accepted)" -v d="$(f duration_us)" -v p50="$(f p50_us)" -v p99="$(f p99_us)" \
        -v o="$(f other)" 'BEGIN { printf "%.0f %.2f %.2f %d\n", a / (d / 1e6), p50 / 1000, p99 / 1000, o }'
    rm -rf "$data"
}

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# before: $BEFORE_BIN"
echo "# after:  $AFTER_BIN"
declare -A results
setups=(0 2)
[[ -n ${BENCH_PG_URL:-} ]] && setups+=(pg)
for setup in "${setups[@]}"; do
    workers=$setup store=sqlite
    [[ $setup == pg ]] && workers=0 store=pg
    for round in $(seq 1 "$ROUNDS"); do
        order=(before after)
        ((round % 2 == 0)) && order=(after before)
        for which in "${order[@]}"; do
            bin=$BEFORE_BIN
            [[ $which == after ]] && bin=$AFTER_BIN
            r=$(run "$bin" "$workers" "$store")
            echo "setup=$setup round=$round $which: accepted/s=$(cut -d' ' -f1 <<<"$r") p50=$(cut -d' ' -f2 <<<"$r")ms p99=$(cut -d' ' -f3 <<<"$r")ms non-202=$(cut -d' ' -f4 <<<"$r") load=$(cut -d' ' -f1 /proc/loadavg)"
            results[$setup.$which]+="$r"$'\n'
        done
    done
done
echo "# medians (setup 0: SQLite, workers off; 2: SQLite, 2 workers scanning; pg: PostgreSQL, workers off)"
for setup in "${setups[@]}"; do
    for which in before after; do
        rows=${results[$setup.$which]}
        echo "setup=$setup $which: accepted/s=$(cut -d' ' -f1 <<<"$rows" | grep . | median) p50=$(cut -d' ' -f2 <<<"$rows" | grep . | median)ms p99=$(cut -d' ' -f3 <<<"$rows" | grep . | median)ms"
    done
done
echo "# end $(date -u +%Y-%m-%dT%H:%M:%SZ), load average $(cut -d' ' -f1-3 /proc/loadavg)"
