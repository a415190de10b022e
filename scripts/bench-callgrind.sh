#!/usr/bin/env bash
# Instructions per request, counted by callgrind: a measure of CPU work that machine noise does
# not move (unlike latency or throughput on a shared machine).
#
#   scripts/bench-callgrind.sh <binary> [<binary>...]
#   CALLGRIND_OUT=/tmp/cg.md scripts/bench-callgrind.sh old/certus-assurance new/certus-assurance
#
# For each binary, in the order given: starts `<binary> serve` under `valgrind --tool=callgrind`
# on a loopback port with a fresh data directory (SQLite, MAX_WORKERS=0, the default log level,
# so the request span is created as in production), sends CALLGRIND_WARMUP requests to every
# route, then for each route: zeroes the counters (`callgrind_control -z`), sends
# CALLGRIND_REQUESTS requests over one keep-alive connection (one curl process: its own work is
# not counted), dumps the counters (`callgrind_control -d`) and divides the instructions (Ir) of
# the dump by the number of requests. An idle window of CALLGRIND_IDLE seconds is measured too
# and reported per second (background tasks: timers, pollers); it is not subtracted.
#
# Prints a markdown table: one row per route, one column per binary, and the ratio of each
# binary to the first. Every request must answer 200, or the script fails.
#
# Knobs (environment):
#   CALLGRIND_ROUTES     routes to measure (default "/health /stats /metrics")
#   CALLGRIND_REQUESTS   measured requests per route (default 2000)
#   CALLGRIND_WARMUP     unmeasured requests per route first (default 200)
#   CALLGRIND_IDLE       seconds of the idle window (default 10)
#   CALLGRIND_PORT       port (default 18390)
#   CALLGRIND_OUT        also write the table to this file
#   CALLGRIND_KEEP       1: keep the temporary directory (callgrind dumps, service logs)
#   CALLGRIND_ENV        extra `NAME=value` words for the service's environment
set -euo pipefail

(($# >= 1)) || { echo "usage: $0 <binary> [<binary>...]" >&2; exit 2; }
ROUTES=${CALLGRIND_ROUTES:-/health /stats /metrics}
REQUESTS=${CALLGRIND_REQUESTS:-2000}
WARMUP=${CALLGRIND_WARMUP:-200}
PORT=${CALLGRIND_PORT:-18390}
IDLE=${CALLGRIND_IDLE:-10}

log() { printf '[bench-callgrind %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

command -v valgrind >/dev/null && command -v callgrind_control >/dev/null \
    || die "valgrind is missing: install it with 'apt-get install -y valgrind'"
command -v curl >/dev/null || die "curl is missing: install it with 'apt-get install -y curl'"
for bin in "$@"; do
    [[ -x "$bin" ]] || die "$bin is not an executable (build it with 'cargo build --release')"
done

TMP=$(mktemp -d /tmp/bench-callgrind.XXXXXX)
PID=
cleanup() {
    if [[ -n "$PID" ]] && kill -0 "$PID" 2>/dev/null; then
        kill "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
    fi
    [[ "${CALLGRIND_KEEP:-0}" == 1 ]] && log "kept $TMP" || rm -rf "$TMP"
}
trap cleanup EXIT

# `n` requests to `url` over one connection; fails unless every answer is 200.
send() {
    local url=$1 n=$2 cfg="$TMP/curl.cfg"
    : >"$cfg"
    for ((i = 0; i < n; i++)); do
        printf 'url = "%s"\noutput = "/dev/null"\n' "$url" >>"$cfg"
    done
    local codes
    codes=$(curl -s --max-time 600 -w '%{http_code}\n' -K "$cfg")
    local ok
    ok=$(grep -c '^200$' <<<"$codes" || true)
    ((ok == n)) || die "$url: $ok of $n requests answered 200"
}

# The instructions (Ir) of the newest callgrind dump of the service.
last_dump_ir() {
    local file
    file=$(ls -t "$TMP"/run/callgrind.out.* | head -1)
    awk '/^(summary|totals):/ {print $2; exit}' "$file"
}

measure_binary() {
    local bin=$1 idx=$2
    rm -rf "$TMP/run" && mkdir -p "$TMP/run"
    log "starting $bin under callgrind"
    # shellcheck disable=SC2086
    env CERTUS_ASSURANCE_DATA_DIR="$TMP/run/data" CERTUS_ASSURANCE_MAX_WORKERS=0 \
        CERTUS_ASSURANCE_LOG_FORMAT=json CERTUS_ASSURANCE_LISTEN_ADDR="127.0.0.1:$PORT" \
        ${CALLGRIND_ENV:-} \
        valgrind --tool=callgrind --callgrind-out-file="$TMP/run/callgrind.out" \
        "$bin" serve >"$TMP/run/service.log" 2>&1 &
    PID=$!
    local base="http://127.0.0.1:$PORT"
    for ((t = 0; t < 240; t++)); do
        curl -s -o /dev/null --max-time 5 "$base/health" && break
        kill -0 "$PID" 2>/dev/null || die "the service stopped: $(tail -5 "$TMP/run/service.log")"
        sleep 1
    done
    curl -s -o /dev/null --max-time 5 "$base/health" || die "the service did not answer in 240 s"
    for route in $ROUTES; do send "$base$route" "$WARMUP"; done
    for route in $ROUTES; do
        callgrind_control -z "$PID" >/dev/null 2>&1
        send "$base$route" "$REQUESTS"
        callgrind_control -d "$PID" >/dev/null 2>&1
        IR["$idx,$route"]=$(($(last_dump_ir) / REQUESTS))
        log "$bin $route: ${IR["$idx,$route"]} instructions/request"
    done
    callgrind_control -z "$PID" >/dev/null 2>&1
    sleep "$IDLE"
    callgrind_control -d "$PID" >/dev/null 2>&1
    IR["$idx,idle"]=$(($(last_dump_ir) / IDLE))
    kill "$PID"
    wait "$PID" 2>/dev/null || true
    PID=
}

declare -A IR
idx=0
for bin in "$@"; do
    measure_binary "$bin" "$idx"
    idx=$((idx + 1))
done

{
    printf '| route |'
    for bin in "$@"; do printf ' %s |' "$bin"; done
    ((idx > 1)) && for ((i = 1; i < idx; i++)); do printf ' ratio %d/1 |' $((i + 1)); done
    printf '\n|---|'
    for ((i = 0; i < idx; i++)); do printf -- '---:|'; done
    ((idx > 1)) && for ((i = 1; i < idx; i++)); do printf -- '---:|'; done
    printf '\n'
    for route in $ROUTES idle; do
        label=$route
        [[ $route == idle ]] && label="idle, per second"
        printf '| `%s` |' "$label"
        for ((i = 0; i < idx; i++)); do printf ' %s |' "${IR["$i,$route"]}"; done
        for ((i = 1; i < idx; i++)); do
            awk -v a="${IR["$i,$route"]}" -v b="${IR["0,$route"]}" \
                'BEGIN { if (b > 0) printf " %.2f |", a / b; else printf " - |" }'
        done
        printf '\n'
    done
    printf '\n(instructions per request, callgrind Ir; %s requests per route after %s warm-up requests; valgrind %s)\n' \
        "$REQUESTS" "$WARMUP" "$(valgrind --version)"
} | tee "${CALLGRIND_OUT:-/dev/null}"
