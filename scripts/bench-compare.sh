#!/usr/bin/env bash
# This tree against an earlier revision, in one run: instructions per request (valgrind
# --tool=callgrind) and throughput/latency (wrk) of /health, /stats, /metrics, submit and get.
#
#   scripts/bench.sh --against <rev>            # the same as: scripts/bench-compare.sh <rev>
#   BENCH_OUT=/tmp/cmp.md scripts/bench.sh --against v0.1.0
#
# What it does:
#   1. builds this tree (cargo build --release --locked, $CARGO_TARGET_DIR) and <rev> (any git
#      revision: tag, branch, hash), exported with `git archive` into a temp dir and built with a
#      target dir of its own (BENCH_AGAINST_TARGET_DIR, default $CARGO_TARGET_DIR-against; seeded
#      from $CARGO_TARGET_DIR on first use so that only what differs is compiled);
#   2. instructions: starts each binary under callgrind (fresh SQLite data dir, MAX_WORKERS=0,
#      so submissions are stored QUEUED and never run) and, per endpoint, sends BENCH_CG_WARMUP
#      unmeasured requests, closes the counting window (callgrind_control --dump), sends
#      BENCH_CG_REQUESTS requests over one keep-alive connection (curl), closes the window again:
#      instructions per request = the window's total / requests. Counts are of user-space
#      instructions in every thread of the service (kernel time is not counted), so they repeat
#      within a fraction of a per cent on a busy machine, unlike times;
#   3. throughput and latency: both binaries run side by side (service pinned to CPU 0, wrk to
#      CPU 1 when BENCH_PIN=1) and are measured alternately, A B B A ..., BENCH_REPEAT runs each
#      per endpoint (wrk -t1 -c$BENCH_CONNS -d$BENCH_DURATION; submit with -c$BENCH_SUBMIT_CONNS),
#      so both see the same machine noise; the table shows medians;
#   4. prints one markdown table: the size of each binary, each measure for <rev> and for this
#      tree, and the ratio (this tree / <rev>).
#
# Knobs (environment): BENCH_CG_REQUESTS (300), BENCH_CG_WARMUP (30), BENCH_REPEAT (2),
# BENCH_DURATION (5), BENCH_WARMUP (1), BENCH_CONNS (4), BENCH_SUBMIT_CONNS (8), BENCH_PIN (1),
# BENCH_OUT (markdown file), BENCH_SKIP_BUILD (1: use the binaries already built),
# BENCH_TIME_LIMIT (whole run, default 2400 s), BENCH_ENDPOINTS (default "health stats metrics
# submit get"), BENCH_AGAINST_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

[[ $# -eq 1 && -n "$1" ]] || { echo "usage: scripts/bench.sh --against <git revision>" >&2; exit 2; }
AGAINST=$1
CG_REQUESTS=${BENCH_CG_REQUESTS:-300}
CG_WARMUP=${BENCH_CG_WARMUP:-30}
REPEAT=${BENCH_REPEAT:-2}
DURATION=${BENCH_DURATION:-5}
WARMUP=${BENCH_WARMUP:-1}
CONNS=${BENCH_CONNS:-4}
SUBMIT_CONNS=${BENCH_SUBMIT_CONNS:-8}
PIN=${BENCH_PIN:-1}
ENDPOINTS=${BENCH_ENDPOINTS:-health stats metrics submit get}
TIME_LIMIT=${BENCH_TIME_LIMIT:-2400}
DEADLINE=$(($(date +%s) + TIME_LIMIT))
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/certus-assurance/bench-target}"
export CARGO_TERM_COLOR=never
AGAINST_TARGET_DIR=${BENCH_AGAINST_TARGET_DIR:-${CARGO_TARGET_DIR%/}-against}
SUBMISSION='{"workspace_id":"bench","component_id":"c","assessment_id":"a","git_url":"https://example.com/org/repo.git","branch":"main","profile":"light"}'

log() { printf '[bench-compare %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
calc() { awk "BEGIN { printf \"%.${2:-2}f\", $1 }"; }
need_time() { (($(date +%s) + $1 <= DEADLINE)) || die "BENCH_TIME_LIMIT (${TIME_LIMIT}s) would be exceeded; stopping"; }
median() {
    printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END {
        if (NR % 2) print v[(NR + 1) / 2]; else printf "%.0f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

for tool in git cargo curl wrk valgrind callgrind_control awk taskset ss setsid; do
    command -v "$tool" >/dev/null 2>&1 ||
        die "$tool is required (Debian: apt-get install -y wrk valgrind curl util-linux iproute2)"
done
[[ "$(nproc)" -ge 2 ]] || PIN=0
source scripts/bench-lib.sh # start_certus
REV=$(git rev-parse --verify --quiet "$AGAINST^{commit}") || die "'$AGAINST' is not a git revision here"
REV_SHORT=$(git rev-parse --short=12 "$REV")
HEAD_SHORT=$(git rev-parse --short=12 HEAD)
DIRTY=""
[[ -n "$(git status --porcelain -- src migrations build.rs Cargo.toml Cargo.lock)" ]] && DIRTY=" + uncommitted changes"

TMP=$(mktemp -d /tmp/certus-bench-compare.XXXXXX)
PIDS=()
BUILD_PID=""
cleanup() {
    local rc=$? pid
    [[ -n "$BUILD_PID" ]] && kill -TERM -- "-$BUILD_PID" 2>/dev/null
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        timeout 20 tail --pid="$pid" -f /dev/null 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    done
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# build DIR TARGET_DIR LOG [REVISION]: release build in its own session, bounded by the deadline.
build() {
    local dir=$1 target=$2 out=$3 revision=${4:-}
    (
        cd "$dir"
        export CARGO_TARGET_DIR="$target"
        [[ -n "$revision" ]] && export CERTUS_ASSURANCE_BUILD_REVISION="$revision"
        exec setsid -w nice cargo build --release --locked
    ) >"$out" 2>&1 &
    BUILD_PID=$!
    while kill -0 "$BUILD_PID" 2>/dev/null; do
        sleep 5
        need_time 0
    done
    wait "$BUILD_PID" || { BUILD_PID=""; tail -n 30 "$out" >&2; die "release build in $dir failed"; }
    BUILD_PID=""
}

BIN_NEW="$CARGO_TARGET_DIR/release/certus-assurance"
BIN_OLD="$AGAINST_TARGET_DIR/release/certus-assurance"
if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
    log "building this tree ($HEAD_SHORT$DIRTY) in $CARGO_TARGET_DIR"
    build . "$CARGO_TARGET_DIR" "$TMP/build-new.log"
    log "exporting $AGAINST ($REV_SHORT) with git archive and building it in $AGAINST_TARGET_DIR"
    mkdir -p "$TMP/src-old"
    git archive "$REV" | tar -x -C "$TMP/src-old"
    if [[ ! -d "$AGAINST_TARGET_DIR/release" && -d "$CARGO_TARGET_DIR/release" ]]; then
        log "  seeding $AGAINST_TARGET_DIR from $CARGO_TARGET_DIR (dependencies are reused)"
        mkdir -p "$AGAINST_TARGET_DIR"
        cp -a --reflink=auto "$CARGO_TARGET_DIR/release" "$AGAINST_TARGET_DIR/"
    fi
    build "$TMP/src-old" "$AGAINST_TARGET_DIR" "$TMP/build-old.log" "$REV_SHORT"
fi
[[ -x "$BIN_NEW" ]] || die "no binary at $BIN_NEW"
[[ -x "$BIN_OLD" ]] || die "no binary at $BIN_OLD (run without BENCH_SKIP_BUILD=1)"

port_free() { [[ -z "$(ss -Htln "sport = :$1" 2>/dev/null)" ]]; }
free_port() { # free_port [EXCEPT]
    local p
    for p in $(seq 18200 18299); do
        [[ "$p" != "${1:-}" ]] && port_free "$p" && { echo "$p"; return 0; }
    done
    die "no free port in 18200-18299"
}
cpu_prefix=()
wrk_prefix=()
if [[ "$PIN" == 1 ]]; then
    cpu_prefix=(taskset -c 0)
    wrk_prefix=(taskset -c 1)
fi

# start NAME BIN PORT [WRAPPER...]: the service with a fresh data dir; sets STARTED_PID.
start() {
    local name=$1 bin=$2 port=$3
    shift 3
    start_certus "$TMP/$name.log" "$port" "$TMP/$name" "" "$bin" "${cpu_prefix[@]}" "$@" ||
        die "could not start $name"
    PIDS+=("$STARTED_PID")
}
stop() { # stop PID
    kill -TERM "$1" 2>/dev/null || true
    timeout 60 tail --pid="$1" -f /dev/null 2>/dev/null || kill -KILL "$1" 2>/dev/null || true
}
submit_one() { # submit_one BASE -> test_id of a new scan
    curl -fsS --max-time 30 -H 'Content-Type: application/json' --data "$SUBMISSION" \
        "$1/v1/security-scans" | grep -o '"test_id":"[^"]*"' | cut -d'"' -f4
}

printf '%s' "$SUBMISSION" >"$TMP/submission.json"
# curl_config FILE BASE ENDPOINT COUNT TEST_ID: a curl config sending COUNT requests of ENDPOINT,
# one after the other over one keep-alive connection, printing each status code.
curl_config() {
    local file=$1 base=$2 ep=$3 count=$4 id=$5 i
    : >"$file"
    for i in $(seq 1 "$count"); do
        ((i > 1)) && echo next >>"$file"
        case "$ep" in
            submit)
                printf 'url = "%s/v1/security-scans"\nheader = "Content-Type: application/json"\ndata-binary = "@%s"\n' \
                    "$base" "$TMP/submission.json" >>"$file" ;;
            get) printf 'url = "%s/v1/security-scans/%s"\n' "$base" "$id" >>"$file" ;;
            *) printf 'url = "%s/%s"\n' "$base" "$ep" >>"$file" ;;
        esac
        printf 'output = "/dev/null"\nwrite-out = "%%{http_code}\\n"\nmax-time = 60\n' >>"$file"
    done
}
send() { # send BASE ENDPOINT COUNT TEST_ID: COUNT requests; dies unless each answers 2xx
    curl_config "$TMP/curl.cfg" "$1" "$2" "$3" "$4"
    curl -sS --config "$TMP/curl.cfg" >"$TMP/codes" || die "curl failed on $2"
    local bad
    bad=$(grep -cv '^20[02]$' "$TMP/codes" || true)
    ((bad == 0)) || die "$2 answered $(sort "$TMP/codes" | uniq -c | tr '\n' ' ')"
}

declare -A R

# ---------------------------------------------------------------------------------------------
# Instructions per request. This function is the one place that knows how callgrind is driven;
# a shared measurement script can replace its body without changing the callers.
#
# cg_window PID OUTBASE BASE: closes the current counting window (callgrind_control --dump) and
# prints the instructions counted in it. callgrind reads its commands only while the program
# runs, so /health is requested every 0.3 s until the dump appears; the /health requests that
# land in the window closed next cost one request's worth at most per poke (the endpoint tables
# show /health's own cost for scale).
dump_count() { # dump_count OUTBASE: how many dump files callgrind has written
    local files
    files=$(compgen -G "$1.*" || true)
    [[ -z "$files" ]] && echo 0 || wc -l <<<"$files"
}
cg_window() {
    local pid=$1 out=$2 base=$3 before after i
    before=$(dump_count "$out")
    callgrind_control --dump "$pid" >"$TMP/cgctl.log" 2>&1 &
    local ctl=$!
    for i in $(seq 1 200); do
        after=$(dump_count "$out")
        ((after > before)) && break
        curl -fsS --max-time 5 -o /dev/null "$base/health" || true
        sleep 0.3
    done
    wait "$ctl" || true
    ((after > before)) || die "callgrind did not dump (callgrind_control: $(cat "$TMP/cgctl.log"))"
    local file="$out.$after"
    [[ -f "$file" ]] || die "callgrind wrote no $file"
    for i in $(seq 1 50); do # the dump file is complete once its totals line is written
        grep -Eq '^(totals|summary):' "$file" && break
        sleep 0.2
    done
    awk '/^(totals|summary):/ { print $2; exit }' "$file"
}
# callgrind_run NAME BIN: instructions per request of every endpoint, into R[NAME.EP.ir].
callgrind_run() {
    local name=$1 bin=$2 port base ep id ir pid
    port=$(free_port)
    base="http://127.0.0.1:$port"
    need_time 120
    log "callgrind: starting $name ($bin) on :$port"
    start "cg-$name" "$bin" "$port" valgrind --tool=callgrind --dump-instr=no --dump-line=no \
        --callgrind-out-file="$TMP/cg-$name.out"
    pid=$STARTED_PID
    id=$(submit_one "$base")
    [[ -n "$id" ]] || die "$name: the first submission answered no test_id"
    for ep in $ENDPOINTS; do
        need_time 60
        send "$base" "$ep" "$CG_WARMUP" "$id"
        cg_window "$pid" "$TMP/cg-$name.out" "$base" >/dev/null
        send "$base" "$ep" "$CG_REQUESTS" "$id"
        ir=$(cg_window "$pid" "$TMP/cg-$name.out" "$base")
        R[$name.$ep.ir]=$((ir / CG_REQUESTS))
        log "  $name $ep: ${R[$name.$ep.ir]} instructions per request"
    done
    stop "$pid"
}

# ---------------------------------------------------------------------------------------------
# Throughput and latency, both binaries side by side.
# wrk_run NAME BASE EP REP ID: one warm-up and one measured wrk run into R[NAME.EP.REP.*].
wrk_run() {
    local name=$1 base=$2 ep=$3 rep=$4 id=$5 url script conns=$CONNS out
    case "$ep" in
        submit) url="$base/v1/security-scans"; script=benches/wrk/submit.lua; conns=$SUBMIT_CONNS ;;
        get) url="$base/v1/security-scans/$id"; script=benches/wrk/report.lua ;;
        *) url="$base/$ep"; script=benches/wrk/report.lua ;;
    esac
    need_time $((WARMUP + DURATION + 30))
    out="$TMP/wrk-$name-$ep-$rep.txt"
    if ((WARMUP > 0)); then
        timeout $((WARMUP + 20)) "${wrk_prefix[@]}" wrk -t1 -c"$conns" -d"${WARMUP}s" -s "$script" "$url" >/dev/null 2>&1 ||
            die "wrk warm-up failed: $url"
    fi
    timeout $((DURATION + 20)) "${wrk_prefix[@]}" wrk -t1 -c"$conns" -d"${DURATION}s" --latency -s "$script" "$url" \
        >"$out" 2>&1 || { cat "$out" >&2; die "wrk failed: $url"; }
    local f
    f() { grep -o "\b$1=[0-9.]*" "$out" | head -n1 | cut -d= -f2; }
    local requests duration errors
    requests=$(f requests)
    duration=$(f duration_us)
    [[ -n "$requests" && -n "$duration" ]] || { cat "$out" >&2; die "no result line from wrk: $url"; }
    if [[ "$ep" == submit ]]; then
        errors=$(($(f other) + $(f connect_errors) + $(f read_errors) + $(f write_errors) + $(f timeouts)))
    else
        errors=$(($(f status_errors) + $(f connect_errors) + $(f read_errors) + $(f write_errors) + $(f timeouts)))
    fi
    ((errors == 0)) || { cat "$out" >&2; die "$url: $errors errors"; }
    R[$name.$ep.$rep.rps]=$(calc "$requests / ($duration / 1000000)" 0)
    R[$name.$ep.$rep.p50]=$(f p50_us)
    R[$name.$ep.$rep.p99]=$(f p99_us)
    log "  $name $ep #$rep: ${R[$name.$ep.$rep.rps]} req/s, p50 ${R[$name.$ep.$rep.p50]} us, p99 ${R[$name.$ep.$rep.p99]} us"
}
wrk_phase() {
    local port_old port_new base_old base_new id_old id_new rep ep k
    port_old=$(free_port)
    start wrk-old "$BIN_OLD" "$port_old"
    port_new=$(free_port "$port_old")
    start wrk-new "$BIN_NEW" "$port_new"
    base_old="http://127.0.0.1:$port_old"
    base_new="http://127.0.0.1:$port_new"
    id_old=$(submit_one "$base_old")
    id_new=$(submit_one "$base_new")
    log "wrk: $REV_SHORT on :$port_old, this tree on :$port_new, alternating"
    for rep in $(seq 1 "$REPEAT"); do
        for ep in $ENDPOINTS; do
            if ((rep % 2)); then
                wrk_run old "$base_old" "$ep" "$rep" "$id_old"
                wrk_run new "$base_new" "$ep" "$rep" "$id_new"
            else
                wrk_run new "$base_new" "$ep" "$rep" "$id_new"
                wrk_run old "$base_old" "$ep" "$rep" "$id_old"
            fi
        done
    done
    for name in old new; do
        for ep in $ENDPOINTS; do
            for k in rps p50 p99; do
                local vals=()
                for rep in $(seq 1 "$REPEAT"); do vals+=("${R[$name.$ep.$rep.$k]}"); done
                R[$name.$ep.$k]=$(median "${vals[@]}")
            done
        done
    done
}

callgrind_run old "$BIN_OLD"
callgrind_run new "$BIN_NEW"
wrk_phase

# ---------------------------------------------------------------------------------------------
# Table
label() {
    case "$1" in
        submit) echo 'POST `/v1/security-scans`' ;;
        get) echo 'GET `/v1/security-scans/{id}`' ;;
        *) echo "GET \`/$1\`" ;;
    esac
}
ratio() { calc "$2 / $1" 2; }
size_old=$(stat -L -c %s "$BIN_OLD")
size_new=$(stat -L -c %s "$BIN_NEW")
rows="| release binary | size (bytes) | $size_old | $size_new | $(ratio "$size_old" "$size_new")× |"$'\n'
for ep in $ENDPOINTS; do
    rows+="| $(label "$ep") | instructions/request | ${R[old.$ep.ir]} | ${R[new.$ep.ir]} | $(ratio "${R[old.$ep.ir]}" "${R[new.$ep.ir]}")× |"$'\n'
done
for ep in $ENDPOINTS; do
    rows+="| $(label "$ep") | req/s | ${R[old.$ep.rps]} | ${R[new.$ep.rps]} | $(ratio "${R[old.$ep.rps]}" "${R[new.$ep.rps]}")× |"$'\n'
    rows+="| $(label "$ep") | p50 µs | ${R[old.$ep.p50]} | ${R[new.$ep.p50]} | $(ratio "${R[old.$ep.p50]}" "${R[new.$ep.p50]}")× |"$'\n'
    rows+="| $(label "$ep") | p99 µs | ${R[old.$ep.p99]} | ${R[new.$ep.p99]} | $(ratio "${R[old.$ep.p99]}" "${R[new.$ep.p99]}")× |"$'\n'
done
pin_desc="no CPU pinning"
[[ "$PIN" == 1 ]] && pin_desc="services on CPU 0, wrk on CPU 1"
summary=$(
    cat <<EOF
#### Comparison run of $(date -u +%Y-%m-%dT%H:%M:%SZ): \`$REV_SHORT\` ($AGAINST) against \`$HEAD_SHORT\`$DIRTY

- Command: \`scripts/bench.sh --against $AGAINST\`; release builds; $(nproc) CPUs, Linux $(uname -r), $(valgrind --version)
- Instructions: callgrind, $CG_REQUESTS requests per endpoint over one keep-alive connection after $CG_WARMUP unmeasured ones; fresh SQLite store, \`CERTUS_ASSURANCE_MAX_WORKERS=0\`
- Throughput/latency: \`wrk -t1 -c$CONNS -d${DURATION}s\` (submit: \`-c$SUBMIT_CONNS\`, benches/wrk/submit.lua) after ${WARMUP}s warm-up, the two services side by side and measured alternately, median of $REPEAT runs each; $pin_desc
- Ratio = this tree / \`$REV_SHORT\` (below 1 is better for instructions and latency, above 1 for req/s)

| endpoint | measure | \`$REV_SHORT\` | \`$HEAD_SHORT\`$DIRTY | ratio |
| --- | --- | ---: | ---: | ---: |
${rows}
EOF
)
printf '%s\n' "$summary"
if [[ -n "${BENCH_OUT:-}" ]]; then
    printf '%s\n' "$summary" >"$BENCH_OUT"
    log "summary written to $BENCH_OUT"
fi
