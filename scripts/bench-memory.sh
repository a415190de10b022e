#!/usr/bin/env bash
# Memory of the service: resident memory at several store sizes, and whether it levels off under
# sustained read load.
#
#   scripts/bench-memory.sh                          # summary to stdout
#   BENCH_OUT=/tmp/memory.md scripts/bench-memory.sh # ... and as markdown in a file
#
# What it does, against one release binary (cargo build --release --locked, $CARGO_TARGET_DIR):
#   1. per store size in BENCH_SIZES (default "0 100000 1000000"): a SQLite store in a fresh temp
#      dir, its schema created by the service, then filled with SQL directly (scripts/bench-lib.sh:
#      finished scans of 100 workspaces with a summary and artifact list each); the service
#      started on it (CERTUS_ASSURANCE_MAX_WORKERS=0); VmRSS (and its anonymous and file-backed
#      parts, /proc/<pid>/status) after start-up, then after BENCH_SIZE_SECONDS (20) of the read mix;
#   2. at BENCH_SUSTAIN_SCANS (100000, one of the sizes): the read mix for BENCH_SUSTAIN_REQUESTS
#      (600000) requests or more, in wrk runs of BENCH_CHUNK_SECONDS (15), VmRSS sampled after each;
#      verdict: RSS levels off when it grows by at most BENCH_LEVEL_KIB (1024) KiB over the second
#      half of the requests.
# The read mix (benches/wrk/read-mix.lua, wrk -t1 -c$BENCH_CONNS): /stats, /metrics, the list's
# first page, a workspace's first page, one scan by id (random), in turn.
#
# Knobs (environment): BENCH_OUT, BENCH_SIZES, BENCH_SUSTAIN_SCANS, BENCH_SUSTAIN_REQUESTS,
# BENCH_CHUNK_SECONDS, BENCH_SIZE_SECONDS, BENCH_CONNS (4), BENCH_LEVEL_KIB, BENCH_PIN (1: service
# on CPU 0, wrk on CPU 1), BENCH_SKIP_BUILD (1: use the binary already built), BENCH_BIN (a binary
# to measure instead), BENCH_TIME_LIMIT (whole run, default 1800 s).
set -euo pipefail
cd "$(dirname "$0")/.."

SIZES=${BENCH_SIZES:-0 100000 1000000}
SUSTAIN_SCANS=${BENCH_SUSTAIN_SCANS:-100000}
SUSTAIN_REQUESTS=${BENCH_SUSTAIN_REQUESTS:-600000}
CHUNK=${BENCH_CHUNK_SECONDS:-15}
SIZE_SECONDS=${BENCH_SIZE_SECONDS:-20}
CONNS=${BENCH_CONNS:-4}
LEVEL_KIB=${BENCH_LEVEL_KIB:-1024}
PIN=${BENCH_PIN:-1}
TIME_LIMIT=${BENCH_TIME_LIMIT:-1800}
DEADLINE=$(($(date +%s) + TIME_LIMIT))
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/certus-assurance/bench-target}"
export CARGO_TERM_COLOR=never
BIN=${BENCH_BIN:-$CARGO_TARGET_DIR/release/certus-assurance}

log() { printf '[bench-memory %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
calc() { awk "BEGIN { printf \"%.${2:-2}f\", $1 }"; }
need_time() { (($(date +%s) + $1 <= DEADLINE)) || die "BENCH_TIME_LIMIT (${TIME_LIMIT}s) would be exceeded; stopping"; }
mib() { calc "$1 / 1024" 1; }

for tool in wrk curl sqlite3 awk taskset ss; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is required (Debian: apt-get install -y wrk curl sqlite3)"
done
[[ " $SIZES " == *" $SUSTAIN_SCANS "* ]] || die "BENCH_SUSTAIN_SCANS ($SUSTAIN_SCANS) must be one of BENCH_SIZES ($SIZES)"
[[ "$(nproc)" -ge 2 ]] || PIN=0
source scripts/bench-lib.sh # fill_sqlite, start_certus

TMP=$(mktemp -d /tmp/certus-bench-memory.XXXXXX)
SERVICE_PID=""
stop_service() {
    [[ -n "$SERVICE_PID" ]] || return 0
    kill -TERM "$SERVICE_PID" 2>/dev/null || true
    timeout 30 tail --pid="$SERVICE_PID" -f /dev/null 2>/dev/null || kill -KILL "$SERVICE_PID" 2>/dev/null || true
    wait "$SERVICE_PID" 2>/dev/null || true
    SERVICE_PID=""
}
cleanup() {
    local rc=$?
    stop_service
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ "${BENCH_SKIP_BUILD:-0}" != 1 && -z "${BENCH_BIN:-}" ]]; then
    log "building the release binary (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
    timeout $((DEADLINE - $(date +%s))) nice cargo build --release --locked >"$TMP/build.log" 2>&1 ||
        { tail -n 30 "$TMP/build.log" >&2; die "release build failed or ran out of time"; }
fi
[[ -x "$BIN" ]] || die "no binary at $BIN"

PORT=""
for p in $(seq 18200 18299); do
    [[ -z "$(ss -Htln "sport = :$p" 2>/dev/null)" ]] && { PORT=$p; break; }
done
[[ -n "$PORT" ]] || die "no free port in 18200-18299"
BASE="http://127.0.0.1:$PORT"
cpu_prefix=()
wrk_prefix=()
if [[ "$PIN" == 1 ]]; then
    cpu_prefix=(taskset -c 0)
    wrk_prefix=(taskset -c 1)
fi

start_service() { # start_service DBFILE
    start_certus "$TMP/service.log" "$PORT" "$TMP/data" "sqlite://$1" "$BIN" "${cpu_prefix[@]}" ||
        die "could not start the service"
    SERVICE_PID=$STARTED_PID
}
status_kb() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$SERVICE_PID/status"; }
rss() { echo "$(status_kb VmRSS) $(status_kb RssAnon) $(status_kb RssFile)"; }
total_scans() { curl -fsS --max-time 10 "$BASE/stats" | grep -o '"total_scans":[0-9]*' | cut -d: -f2; }

# load SCANS SECONDS OUT: the read mix; echoes the requests answered
load() {
    need_time $(($2 + 30))
    BENCH_SCANS=$1 timeout $(($2 + 30)) "${wrk_prefix[@]}" wrk -t1 -c"$CONNS" -d"${2}s" --latency \
        -s benches/wrk/read-mix.lua "$BASE" >"$3" 2>&1 || { cat "$3" >&2; die "wrk failed"; }
    local out=$3 errors=0 k
    f() { grep -o "\b$1=[0-9.]*" "$out" | head -n1 | cut -d= -f2; }
    for k in status_errors connect_errors read_errors write_errors timeouts; do
        errors=$((errors + $(f "$k")))
    done
    ((errors == 0)) || { cat "$3" >&2; die "the read mix had $errors errors"; }
    f requests
}

declare -A R
samples=""
for size in $SIZES; do
    db="$TMP/store-$size.db"
    rm -rf "$TMP/data"
    start_service "$db" # creates the schema
    stop_service
    if ((size > 0)); then
        need_time 300
        log "filling a SQLite store with $size scans"
        t0=$(date +%s)
        fill_sqlite "$db" 1 "$size"
        R[$size.fill_s]=$(($(date +%s) - t0))
    fi
    R[$size.db]=$(du -sh "$db" | cut -f1)
    start_service "$db"
    [[ "$(total_scans)" == "$size" ]] || die "the store does not hold $size scans"
    sleep 2
    R[$size.start]=$(rss)
    requests=$(load "$size" "$SIZE_SECONDS" "$TMP/size-$size.txt")
    R[$size.after]=$(rss)
    R[$size.requests]=$requests
    log "$size scans: VmRSS $(mib "${R[$size.start]%% *}") MiB after start-up, $(mib "${R[$size.after]%% *}") MiB after $requests requests"
    if [[ "$size" == "$SUSTAIN_SCANS" ]]; then
        log "sustained read mix at $size scans: $SUSTAIN_REQUESTS requests or more"
        total=$requests
        t0=$(date +%s)
        n=0
        samples="| 0 | $total | ${R[$size.after]// / | } |"$'\n'
        first_kb=${R[$size.after]%% *}
        while ((total < SUSTAIN_REQUESTS)); do
            n=$((n + 1))
            total=$((total + $(load "$size" "$CHUNK" "$TMP/chunk.txt")))
            sample=$(rss)
            samples+="| $(($(date +%s) - t0)) | $total | ${sample// / | } |"$'\n'
            echo "$total ${sample%% *}" >>"$TMP/series"
            log "  $total requests: VmRSS $(mib "${sample%% *}") MiB (anon $(mib "$(echo "$sample" | cut -d' ' -f2)"), file $(mib "$(echo "$sample" | cut -d' ' -f3)"))"
        done
        # RSS at the sample nearest half of the requests, and at the end
        mid_kb=$(awk -v half=$((total / 2)) '$1 <= half { v = $2 } END { print v }' "$TMP/series")
        [[ -n "$mid_kb" ]] || mid_kb=$first_kb
        end_kb=${sample%% *}
        R[sustain.total]=$total
        R[sustain.first]=$first_kb
        R[sustain.mid]=$mid_kb
        R[sustain.end]=$end_kb
        R[sustain.hwm]=$(status_kb VmHWM)
    fi
    stop_service
done

growth1=$((R[sustain.mid] - R[sustain.first]))
growth2=$((R[sustain.end] - R[sustain.mid]))
verdict="LEVELS OFF"
((growth2 <= LEVEL_KIB)) || verdict="STILL GROWING"
rows=""
for size in $SIZES; do
    read -r s_rss s_anon s_file <<<"${R[$size.start]}"
    read -r a_rss a_anon a_file <<<"${R[$size.after]}"
    rows+="| $size | ${R[$size.db]} | $(mib "$s_rss") ($(mib "$s_anon") + $(mib "$s_file")) | $(mib "$a_rss") ($(mib "$a_anon") + $(mib "$a_file")) | ${R[$size.requests]} |"$'\n'
done
pin_desc="no CPU pinning"
[[ "$PIN" == 1 ]] && pin_desc="service on CPU 0, wrk on CPU 1"
rev=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
summary=$(
    cat <<EOF
#### Run of $(date -u +%Y-%m-%dT%H:%M:%SZ), revision \`$rev\`

- Command: \`scripts/bench-memory.sh\` (BENCH_SIZES="$SIZES", BENCH_SUSTAIN_REQUESTS=$SUSTAIN_REQUESTS); binary \`${BENCH_BIN:-release build}\`; $(nproc) CPUs, Linux $(uname -r); $pin_desc
- Read mix: \`wrk -t1 -c$CONNS -s benches/wrk/read-mix.lua\` (/stats, /metrics, list first page, workspace first page, one scan by id)

Resident memory (MiB; in brackets: anonymous + file-backed, from /proc/<pid>/status):

| stored scans | SQLite file | after start-up | after ${SIZE_SECONDS} s of the read mix | requests |
| --- | ---: | ---: | ---: | ---: |
${rows}
Sustained read mix at $SUSTAIN_SCANS scans, VmRSS (KiB) after each ${CHUNK} s run:

| seconds | requests | VmRSS | RssAnon | RssFile |
| ---: | ---: | ---: | ---: | ---: |
${samples}
- Over ${R[sustain.total]} requests: $(mib "${R[sustain.first]}") MiB at the start, $(mib "${R[sustain.mid]}") MiB at half, $(mib "${R[sustain.end]}") MiB at the end (VmHWM $(mib "${R[sustain.hwm]}") MiB); growth in the first half $growth1 KiB, in the second half $growth2 KiB
- Verdict (second-half growth ≤ ${LEVEL_KIB} KiB): **$verdict**
EOF
)
printf '%s\n' "$summary"
if [[ -n "${BENCH_OUT:-}" ]]; then
    printf '%s\n' "$summary" >"$BENCH_OUT"
    log "summary written to $BENCH_OUT"
fi
