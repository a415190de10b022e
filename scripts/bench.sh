#!/usr/bin/env bash
# Load benchmark of the operational views at scale: latency of /stats and /metrics with an empty
# store and with 100,000 stored scans, accepted submissions per second, and resident memory.
#
#   scripts/bench.sh                       # summary to stdout
#   BENCH_OUT=/tmp/bench.md scripts/bench.sh   # ... and the same summary as markdown in a file
#
# What it does, in one run against one release binary and one fresh data directory:
#   1. installs wrk from Debian if missing, builds the release binary (separate target dir);
#   2. starts the service on 127.0.0.1 (MAX_WORKERS=0: scans are accepted, never run);
#   3. empty store: VmRSS, then wrk --latency against /stats and /metrics;
#   4. fills the store to BENCH_SCANS scans by POSTing submissions with wrk (benches/wrk/submit.lua)
#      in fixed-length rounds, checking /stats total_scans between rounds;
#   5. full store: VmRSS, then the same wrk runs against /stats and /metrics; then (BENCH_AB=1)
#      the same runs alternated between the full instance and a second one holding 1 scan;
#   6. prints the table (p50/p99 at both sizes, ratios, submissions/s, RSS).
# All traffic is on loopback; every step is bounded in time; the service and the temp dir are
# removed on exit. The target is: every p50/p99 ratio (full / empty) <= BENCH_MAX_RATIO (1.5).
#
# Knobs (environment):
#   BENCH_OUT              markdown summary file (default: none, stdout only)
#   BENCH_PORT             port in 18200-18299 (default: first free one)
#   BENCH_SCANS            stored scans for the second measurement (default 100000)
#   BENCH_THREADS/BENCH_CONNS/BENCH_DURATION   wrk -t/-c/-d of latency runs (default 1/4/10)
#   BENCH_WARMUP           seconds of unrecorded wrk load before each latency run (default 2)
#   BENCH_REPEAT           latency runs per endpoint and store size, interleaved (default 3); the
#                          table shows the median p50/p99, every run is listed under it
#   BENCH_AB               1 (default): afterwards, a second instance holding 1 scan is started
#                          next to the full one and the two are measured alternately,
#                          BENCH_AB_REPEAT (4) times each, so both see the same machine noise
#   BENCH_FILL_CONNS       wrk -c of the fill (default 8); BENCH_FILL_ROUND seconds/round (5);
#                          submissions/s counts the rounds that ran their full length
#   BENCH_FILL_MAX_SECONDS give up filling after this long (default 90)
#   BENCH_PIN              1 (default): service on CPU BENCH_SERVICE_CPUS (0), wrk on
#                          BENCH_WRK_CPUS (1) with taskset; 0: no pinning
#   BENCH_NICE             nice value of the service and wrk (default 0; e.g. -10 as root, so
#                          that other work on a shared machine disturbs the runs less)
#   BENCH_PERF             1: after each phase's measured runs, an extra (unmeasured) wrk run of
#                          each endpoint under `perf record`; top of `perf report` goes to
#                          BENCH_PERF_DIR (default: stderr)
#   BENCH_TIME_LIMIT       the whole run stops with an error after this many seconds (default 840);
#                          the build gets what the measurements leave of it (about 350 s by
#                          default; a first, cold build takes about 4 minutes on 2 idle cores)
#   BENCH_FAIL_ON_TARGET   1: exit 3 when a ratio exceeds BENCH_MAX_RATIO (default 0: report only)
#   BENCH_SKIP_BUILD       1: use an existing binary in the target dir
#
# scripts/bench.sh --against <rev> compares this tree with an earlier revision instead
# (instructions per request with callgrind, throughput and latency): see scripts/bench-compare.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
    --against) exec scripts/bench-compare.sh "${@:2}" ;;
    --against=*) exec scripts/bench-compare.sh "${1#--against=}" "${@:2}" ;;
    "") ;;
    *) echo "usage: scripts/bench.sh [--against <git revision>]" >&2; exit 2 ;;
esac

SCANS=${BENCH_SCANS:-100000}
THREADS=${BENCH_THREADS:-1}
CONNS=${BENCH_CONNS:-4}
DURATION=${BENCH_DURATION:-10}
WARMUP=${BENCH_WARMUP:-2}
REPEAT=${BENCH_REPEAT:-3}
AB=${BENCH_AB:-1}
AB_REPEAT=${BENCH_AB_REPEAT:-4}
((AB == 1)) || AB_REPEAT=0
FILL_CONNS=${BENCH_FILL_CONNS:-8}
FILL_ROUND=${BENCH_FILL_ROUND:-5}
FILL_MAX_SECONDS=${BENCH_FILL_MAX_SECONDS:-90}
PIN=${BENCH_PIN:-1}
NICE=${BENCH_NICE:-0}
SERVICE_CPUS=${BENCH_SERVICE_CPUS:-0}
WRK_CPUS=${BENCH_WRK_CPUS:-1}
MAX_RATIO=${BENCH_MAX_RATIO:-1.5}
TIME_LIMIT=${BENCH_TIME_LIMIT:-840}
SCRIPT_START=$(date +%s)
DEADLINE=$((SCRIPT_START + TIME_LIMIT))
# Seconds the measurements need after the build: start-up, 2 store sizes x 2 endpoints x
# (BENCH_REPEAT + BENCH_AB_REPEAT) x (warm-up + run + slack), the fill, the perf runs if asked.
MEASURE_SECS=$((30 + 2 * 2 * (REPEAT + AB_REPEAT) * (WARMUP + DURATION + 1) + FILL_MAX_SECONDS))
[[ "${BENCH_PERF:-0}" == 1 ]] && MEASURE_SECS=$((MEASURE_SECS + 2 * 2 * (DURATION + 5)))
BUILD_TIMEOUT=$((TIME_LIMIT - MEASURE_SECS))
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/certus-assurance/bench-target}"
export CARGO_TERM_COLOR=never
BIN="$CARGO_TARGET_DIR/release/certus-assurance"
SUBMISSION='{"workspace_id":"bench","component_id":"c","assessment_id":"a","git_url":"https://example.com/org/repo.git","branch":"main","profile":"light"}'

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now() { date +%s.%N; }
# Arithmetic on decimals.
calc() { awk "BEGIN { printf \"%.${2:-2}f\", $1 }"; }
# Dies unless NEED more seconds fit before the deadline of the whole run.
need_time() {
    (($(date +%s) + $1 <= DEADLINE)) || die "BENCH_TIME_LIMIT (${TIME_LIMIT}s) would be exceeded; stopping"
}

TMP=""
SERVICE_PID=""
REF_PID=""
BUILD_PID=""
stop_pid() { # stop_pid PID: SIGTERM, up to 10 s, then SIGKILL
    local pid=$1
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local rc=$?
    if [[ -n "$BUILD_PID" ]] && kill -0 "$BUILD_PID" 2>/dev/null; then
        kill -TERM -- "-$BUILD_PID" 2>/dev/null || kill -TERM "$BUILD_PID" 2>/dev/null || true
        wait "$BUILD_PID" 2>/dev/null || true
    fi
    stop_pid "$SERVICE_PID"
    stop_pid "$REF_PID"
    [[ -n "$TMP" && -d "$TMP" ]] && rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------------
# 1. Tools and binary
if ! command -v wrk >/dev/null 2>&1; then
    log "installing wrk from Debian"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y wrk >/dev/null 2>&1; then
        apt-get update >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y wrk >/dev/null
    fi
fi
for tool in wrk curl awk taskset setsid ss; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is required"
done
if [[ "$(nproc)" -lt 2 ]]; then
    PIN=0
fi

TMP=$(mktemp -d /tmp/certus-bench.XXXXXX)

((BUILD_TIMEOUT >= 60)) || die "BENCH_TIME_LIMIT=${TIME_LIMIT}s leaves no time to build (the measurements need ${MEASURE_SECS}s)"
if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
    log "building the release binary (CARGO_TARGET_DIR=$CARGO_TARGET_DIR, at most ${BUILD_TIMEOUT}s)"
    build_start=$(now)
    # Own session, so that a timeout or Ctrl-C stops cargo and its rustc processes together.
    setsid -w cargo build --release --locked >"$TMP/build.log" 2>&1 &
    BUILD_PID=$!
    waited=0
    while kill -0 "$BUILD_PID" 2>/dev/null; do
        sleep 5
        waited=$((waited + 5))
        if ((waited % 60 == 0)); then
            log "  still building (${waited}s): $(tail -n1 "$TMP/build.log")"
        fi
        if ((waited >= BUILD_TIMEOUT)); then
            die "release build did not finish in ${BUILD_TIMEOUT}s"
        fi
    done
    if ! wait "$BUILD_PID"; then
        BUILD_PID=""
        tail -n 40 "$TMP/build.log" >&2
        die "release build failed"
    fi
    BUILD_PID=""
    log "built in $(calc "$(now) - $build_start" 0)s"
fi
[[ -x "$BIN" ]] || die "no binary at $BIN"

# ---------------------------------------------------------------------------------------------
# 2. Service
port_free() { [[ -z "$(ss -Htln "sport = :$1" 2>/dev/null)" ]]; }
PORT=${BENCH_PORT:-}
if [[ -z "$PORT" ]]; then
    for p in $(seq 18200 18299); do
        if port_free "$p"; then PORT=$p; break; fi
    done
    [[ -n "$PORT" ]] || die "no free port in 18200-18299"
fi
((PORT >= 18200 && PORT <= 18299)) || die "BENCH_PORT must be in 18200-18299"
port_free "$PORT" || die "port $PORT is in use"
BASE="http://127.0.0.1:$PORT"

service_prefix=()
wrk_prefix=()
if [[ "$NICE" != 0 ]]; then
    if nice -n "$NICE" true 2>/dev/null && [[ "$(nice -n "$NICE" nice)" == "$NICE" ]]; then
        service_prefix+=(nice -n "$NICE")
        wrk_prefix+=(nice -n "$NICE")
    else
        log "cannot run at nice $NICE here; running at the default priority"
        NICE=0
    fi
fi
if [[ "$PIN" == 1 ]]; then
    service_prefix+=(taskset -c "$SERVICE_CPUS")
    wrk_prefix+=(taskset -c "$WRK_CPUS")
fi

source scripts/bench-lib.sh # start_certus
# start_service NAME PORT: starts the binary with a fresh data dir $TMP/NAME, sets STARTED_PID.
start_service() {
    local name=$1 port=$2
    log "starting the service '$name' on 127.0.0.1:$port (pinned: $PIN)"
    start_certus "$TMP/$name.log" "$port" "$TMP/$name" "" "$BIN" "${service_prefix[@]}" ||
        die "could not start the service '$name'"
}
start_service data "$PORT"
SERVICE_PID=$STARTED_PID

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$SERVICE_PID/status"; }
hwm_kb() { awk '/^VmHWM:/ { print $2 }' "/proc/$SERVICE_PID/status"; }
total_scans() { # total_scans [BASE]
    curl -fsS --max-time 5 "${1:-$BASE}/stats" | grep -o '"total_scans":[0-9]*' | cut -d: -f2
}
body_bytes() { curl -fsS --max-time 5 -o /dev/null -w '%{size_download}' "${2:-$BASE}$1"; }
field() { # field NAME FILE -> value of NAME=value in the BENCH_* line of FILE
    grep -o "\b$1=[0-9.]*" "$2" | head -n1 | cut -d= -f2
}

declare -A R # results: R[<phase>.<endpoint>.<key>]

run_wrk() { # run_wrk OUTFILE DURATION CONNS SCRIPT URL
    local out=$1 dur=$2 conns=$3 script=$4 url=$5
    need_time $((dur + 5))
    timeout $((dur + 20)) "${wrk_prefix[@]}" wrk -t"$THREADS" -c"$conns" -d"${dur}s" --latency \
        -s "$script" "$url" >"$out" 2>&1 || { cat "$out" >&2; die "wrk failed: $url"; }
}

perf_profile() { # perf_profile PHASE ENDPOINT
    command -v perf >/dev/null 2>&1 || { log "perf not installed; no profile"; return 0; }
    local phase=$1 ep=$2 name="perf-$1-${2#/}"
    log "  profiling $ep ($phase) with perf for ${DURATION}s (not a measured run)"
    perf record -F 997 -g -p "$SERVICE_PID" -o "$TMP/$name.data" -- sleep "$DURATION" \
        >"$TMP/$name.record.log" 2>&1 &
    local perf_pid=$!
    run_wrk "$TMP/$name.wrk" "$DURATION" "$CONNS" benches/wrk/report.lua "$BASE$ep"
    wait "$perf_pid" || true
    {
        echo "# perf: $ep with ${R[$phase.scans]:-?} stored scans; share of samples by binary, then by symbol"
        perf report -i "$TMP/$name.data" --stdio --no-children --sort dso -g none 2>/dev/null |
            grep -v '^#' | grep -v '^$' | sed 's/[[:space:]]*$//' | head -n 8
        perf report -i "$TMP/$name.data" --stdio --no-children --percent-limit 1 --sort symbol \
            -g none 2>/dev/null | grep -v '^#' | grep -v '^$' |
            sed -E 's/[[:space:]]+-[[:space:]]+-[[:space:]]*$//; s/[[:space:]]*$//' | head -n 40
    } >"$TMP/$name.txt" || true
    if [[ -n "${BENCH_PERF_DIR:-}" ]]; then
        mkdir -p "$BENCH_PERF_DIR" && cp "$TMP/$name.txt" "$BENCH_PERF_DIR/"
        log "  perf report: $BENCH_PERF_DIR/$name.txt"
    else
        cat "$TMP/$name.txt" >&2
    fi
}

cpu_pressure_us() { # cumulative "some" CPU stall time in µs (0 where PSI is unavailable)
    awk -F'total=' '/^some/ { print $2; found = 1 } END { if (!found) print 0 }' /proc/pressure/cpu 2>/dev/null || echo 0
}

median() { # median V1 V2 ... -> middle value (mean of the two middle ones for an even count)
    printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END {
        if (NR % 2) print v[(NR + 1) / 2]; else printf "%.0f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# CPU time (user + system, all threads) the process PID has used so far, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
TICK_US=$((1000000 / $(getconf CLK_TCK)))

# latency_run KEY PID BASE EP REP: warm-up, then one measured wrk run; results in R[KEY.EP.REP.*].
latency_run() {
    local key=$1 pid=$2 base=$3 ep=$4 rep=$5 out k psi0 psi1 cpu0 cpu1 errs=0
    if ((WARMUP > 0)); then
        run_wrk "$TMP/warmup.txt" "$WARMUP" "$CONNS" benches/wrk/report.lua "$base$ep"
    fi
    out="$TMP/$key${ep//\//-}-$rep.txt"
    psi0=$(cpu_pressure_us)
    cpu0=$(cpu_ticks "$pid")
    run_wrk "$out" "$DURATION" "$CONNS" benches/wrk/report.lua "$base$ep"
    cpu1=$(cpu_ticks "$pid")
    psi1=$(cpu_pressure_us)
    grep -q '^BENCH_RESULT' "$out" || { cat "$out" >&2; die "no result line from wrk"; }
    for k in requests duration_us p50_us p99_us status_errors connect_errors read_errors \
        write_errors timeouts; do
        R[$key.$ep.$rep.$k]=$(field "$k" "$out")
    done
    for k in status_errors connect_errors read_errors write_errors timeouts; do
        errs=$((errs + ${R[$key.$ep.$rep.$k]}))
    done
    ((errs == 0)) || { cat "$out" >&2; die "$ep answered with $errs errors"; }
    # Share of the run during which some runnable task on the machine waited for a CPU
    # (/proc/pressure/cpu "some"): high values mean other work competed for the cores.
    R[$key.$ep.$rep.psi]=$(calc "100 * ($psi1 - $psi0) / ${R[$key.$ep.$rep.duration_us]}" 0)
    # Service CPU time per answered request: unlike latency, waiting for a busy CPU does not
    # count, so it shows whether the work per request grows with the store.
    R[$key.$ep.$rep.cpu_us]=$(calc "($cpu1 - $cpu0) * $TICK_US / ${R[$key.$ep.$rep.requests]}" 0)
    R[$key.$ep.$rep.rps]=$(calc "${R[$key.$ep.$rep.requests]} / (${R[$key.$ep.$rep.duration_us]} / 1000000)" 0)
    log "  $key $ep #$rep: p50=${R[$key.$ep.$rep.p50_us]}us p99=${R[$key.$ep.$rep.p99_us]}us" \
        "req/s=${R[$key.$ep.$rep.rps]} cpu/req=${R[$key.$ep.$rep.cpu_us]}us cpu-pressure=${R[$key.$ep.$rep.psi]}%"
}

# summarize KEY COUNT: medians (and the list) of COUNT runs per endpoint.
summarize() {
    local key=$1 count=$2 ep k rep
    for ep in /stats /metrics; do
        for k in p50_us p99_us rps psi cpu_us; do
            local vals=()
            for rep in $(seq 1 "$count"); do vals+=("${R[$key.$ep.$rep.$k]}"); done
            R[$key.$ep.$k]=$(median "${vals[@]}")
            R[$key.$ep.$k.all]="${vals[*]}"
        done
    done
}

measure_phase() { # measure_phase PHASE: BENCH_REPEAT rounds of (/stats, /metrics)
    local phase=$1 ep rep
    R[$phase.rss_kb]=$(rss_kb)
    R[$phase.scans]=$(total_scans)
    log "phase '$phase': total_scans=${R[$phase.scans]} VmRSS=${R[$phase.rss_kb]} kB"
    for ep in /stats /metrics; do
        R[$phase.$ep.bytes]=$(body_bytes "$ep")
    done
    for rep in $(seq 1 "$REPEAT"); do
        for ep in /stats /metrics; do
            latency_run "$phase" "$SERVICE_PID" "$BASE" "$ep" "$rep"
        done
    done
    summarize "$phase" "$REPEAT"
    R[$phase.rss_after_kb]=$(rss_kb)
    if [[ "${BENCH_PERF:-0}" == 1 ]]; then
        for ep in /stats /metrics; do perf_profile "$phase" "$ep"; done
    fi
}

# ---------------------------------------------------------------------------------------------
# 3. Empty store
[[ "$(total_scans)" == 0 ]] || die "the fresh store is not empty"
measure_phase empty

# ---------------------------------------------------------------------------------------------
# 4. Fill
log "filling the store to $SCANS scans (wrk -c$FILL_CONNS, rounds of at most ${FILL_ROUND}s)"
accepted=0       # every 202
rate_accepted=0  # 202s of rounds that ran their full length
rate_secs=0      # wall time of those rounds
fill_start=$(now)
rounds=0
current=$(total_scans)
while ((current < SCANS)); do
    elapsed=$(calc "$(now) - $fill_start" 0)
    ((elapsed < FILL_MAX_SECONDS)) || die "store holds $current scans after ${elapsed}s; giving up"
    # Each wrk thread stops after its share of the scans still missing (benches/wrk/submit.lua).
    export BENCH_SUBMIT_LIMIT=$(((SCANS - current + THREADS - 1) / THREADS))
    out="$TMP/fill-$rounds.txt"
    t0=$(now)
    run_wrk "$out" "$FILL_ROUND" "$FILL_CONNS" benches/wrk/submit.lua "$BASE/v1/security-scans"
    t1=$(now)
    unset BENCH_SUBMIT_LIMIT
    grep -q '^BENCH_SUBMIT' "$out" || { cat "$out" >&2; die "no result line from the submit run"; }
    a=$(field accepted "$out")
    o=$(field other "$out")
    stopped=$(field stopped "$out")
    if ((o > 0)); then
        die "round $rounds: $o submissions were not accepted (last status $(field last_other_status "$out"))"
    fi
    accepted=$((accepted + a))
    if ((stopped == 0)); then
        rate_accepted=$((rate_accepted + a))
        rate_secs=$(calc "$rate_secs + $t1 - $t0" 3)
    fi
    rounds=$((rounds + 1))
    current=$(total_scans)
    log "  round $rounds: +$a accepted$( ((stopped)) && echo " (stopped at the target)"), total_scans=$current"
done
if ((rate_accepted > 0)); then
    submit_rate=$(calc "$rate_accepted / $rate_secs" 0)
    submit_desc="**$submit_rate/s** ($rate_accepted accepted in the full-length rounds, ${rate_secs}s)"
else
    submit_rate="n/a"
    submit_desc="n/a (every round stopped early at the target; raise BENCH_SCANS)"
fi
log "fill done: $accepted accepted in $rounds rounds; submissions/s: $submit_rate"
sleep 1 # let the last in-flight inserts settle

# ---------------------------------------------------------------------------------------------
# 5. Full store
measure_phase full
db_bytes=$(du -sb "$TMP/data" | cut -f1)

# ---------------------------------------------------------------------------------------------
# 5b. Interleaved A/B (BENCH_AB=1, the default). Steps 3 and 5 run minutes apart, so on a shared
# machine other work can land in one and not the other. Here a second instance of the same
# binary holding a single scan (so that its /metrics has the same series as the full one) runs
# next to the full one, and the two are measured alternately (A B B A ...), under the same noise.
if [[ "$AB" == 1 ]]; then
    REF_PORT=""
    for p in $(seq 18200 18299); do
        if ((p != PORT)) && port_free "$p"; then REF_PORT=$p; break; fi
    done
    [[ -n "$REF_PORT" ]] || die "no second free port in 18200-18299"
    REF_BASE="http://127.0.0.1:$REF_PORT"
    start_service ref "$REF_PORT"
    REF_PID=$STARTED_PID
    code=$(curl -sS --max-time 5 -o /dev/null -w '%{http_code}' -X POST \
        -H 'Content-Type: application/json' --data "$SUBMISSION" "$REF_BASE/v1/security-scans")
    [[ "$code" == 202 ]] || die "the reference instance answered $code to a submission"
    R[ab-ref.scans]=$(total_scans "$REF_BASE")
    R[ab-full.scans]=$(total_scans)
    log "interleaved A/B: ${R[ab-ref.scans]} scan(s) on :$REF_PORT vs ${R[ab-full.scans]} on :$PORT"
    for rep in $(seq 1 "$AB_REPEAT"); do
        for ep in /stats /metrics; do
            if ((rep % 2)); then
                latency_run ab-ref "$REF_PID" "$REF_BASE" "$ep" "$rep"
                latency_run ab-full "$SERVICE_PID" "$BASE" "$ep" "$rep"
            else
                latency_run ab-full "$SERVICE_PID" "$BASE" "$ep" "$rep"
                latency_run ab-ref "$REF_PID" "$REF_BASE" "$ep" "$rep"
            fi
        done
    done
    summarize ab-ref "$AB_REPEAT"
    summarize ab-full "$AB_REPEAT"
    R[ab-ref.rss_kb]=$(awk '/^VmRSS:/ { print $2 }' "/proc/$REF_PID/status")
    stop_pid "$REF_PID"
    REF_PID=""
fi

# ---------------------------------------------------------------------------------------------
# 6. Summary
ms() { calc "$1 / 1000" 3; }
mib() { calc "$1 / 1024" 1; }
ratio() { calc "$2 / $1" 2; }
verdict=PASS
worst=0
rows=""
for ep in /stats /metrics; do
    for q in p50 p99; do
        e=${R[empty.$ep.${q}_us]}
        f=${R[full.$ep.${q}_us]}
        r=$(ratio "$e" "$f")
        ok=yes
        if awk "BEGIN { exit !($r > $MAX_RATIO) }"; then ok=NO; verdict=FAIL; fi
        if awk "BEGIN { exit !($r > $worst) }"; then worst=$r; fi
        rows+="| \`$ep\` $q latency | $(ms "$e") ms | $(ms "$f") ms | ${r}× | $ok |"$'\n'
    done
    rows+="| \`$ep\` service CPU per request (µs) | ${R[empty.$ep.cpu_us]} | ${R[full.$ep.cpu_us]} | $(ratio "${R[empty.$ep.cpu_us]}" "${R[full.$ep.cpu_us]}")× | |"$'\n'
    rows+="| \`$ep\` throughput (req/s) | ${R[empty.$ep.rps]} | ${R[full.$ep.rps]} | $(ratio "${R[empty.$ep.rps]}" "${R[full.$ep.rps]}")× | |"$'\n'
    rows+="| \`$ep\` body size (bytes) | ${R[empty.$ep.bytes]} | ${R[full.$ep.bytes]} | | |"$'\n'
done
us_list() { local v out=""; for v in $1; do out+="${out:+ / }$(ms "$v")"; done; echo "$out"; }
ab_section=""
if [[ "$AB" == 1 ]]; then
    ab_verdict=PASS
    ab_worst=0
    ab_rows=""
    for ep in /stats /metrics; do
        for q in p50 p99; do
            e=${R[ab-ref.$ep.${q}_us]}
            f=${R[ab-full.$ep.${q}_us]}
            r=$(ratio "$e" "$f")
            ok=yes
            if awk "BEGIN { exit !($r > $MAX_RATIO) }"; then ok=NO; ab_verdict=FAIL; fi
            if awk "BEGIN { exit !($r > $ab_worst) }"; then ab_worst=$r; fi
            ab_rows+="| \`$ep\` $q latency | $(ms "$e") ms | $(ms "$f") ms | ${r}× | $ok |"$'\n'
        done
        ab_rows+="| \`$ep\` service CPU per request (µs) | ${R[ab-ref.$ep.cpu_us]} | ${R[ab-full.$ep.cpu_us]} | $(ratio "${R[ab-ref.$ep.cpu_us]}" "${R[ab-full.$ep.cpu_us]}")× | |"$'\n'
        ab_rows+="| \`$ep\` throughput (req/s) | ${R[ab-ref.$ep.rps]} | ${R[ab-full.$ep.rps]} | $(ratio "${R[ab-ref.$ep.rps]}" "${R[ab-full.$ep.rps]}")× | |"$'\n'
    done
    ab_section="
Interleaved A/B, after step 5: a second instance of the same binary holding ${R[ab-ref.scans]} scan (same metric
series as the full one), measured alternately with the full instance (A B B A …), median of $AB_REPEAT
runs each, same wrk parameters. Both instances see the same machine noise, so this is the fairer ratio.

| measurement | ${R[ab-ref.scans]} scan | ${R[ab-full.scans]} scans | ratio | within ${MAX_RATIO}× |
| --- | ---: | ---: | ---: | :---: |
${ab_rows}
- A/B latency target (every p50/p99 ratio ≤ ${MAX_RATIO}×): **$ab_verdict** (largest ratio ${ab_worst}×); VmRSS of the 1-scan instance: $(mib "${R[ab-ref.rss_kb]}") MiB
"
fi
runs=""
phases="empty full"
[[ "$AB" == 1 ]] && phases+=" ab-ref ab-full"
for phase in $phases; do
    for ep in /stats /metrics; do
        runs+="| $phase | \`$ep\` | $(us_list "${R[$phase.$ep.p50_us.all]}") | $(us_list "${R[$phase.$ep.p99_us.all]}") | ${R[$phase.$ep.rps.all]// / \/ } | ${R[$phase.$ep.cpu_us.all]// / \/ } | ${R[$phase.$ep.psi.all]// / \/ } |"$'\n'
    done
done

rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=""
[[ -n "$(git status --porcelain -- src migrations Cargo.toml Cargo.lock 2>/dev/null)" ]] && dirty=" (+ uncommitted changes in src/)"
mem_total=$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
pin_desc="no CPU pinning"
[[ "$PIN" == 1 ]] && pin_desc="service pinned to CPU $SERVICE_CPUS, wrk to CPU $WRK_CPUS (taskset)"
[[ "$NICE" != 0 ]] && pin_desc+=", both at nice $NICE"

summary=$(
    cat <<EOF
### Run of $(date -u +%Y-%m-%dT%H:%M:%SZ)

- Revision: \`$rev\`$dirty; release build; machine: $(nproc) CPUs, $mem_total RAM, Linux $(uname -r)
- Latency runs: \`wrk -t$THREADS -c$CONNS -d${DURATION}s --latency\` on loopback after a ${WARMUP}s warm-up, $pin_desc
- Store: SQLite in a fresh temp dir, \`CERTUS_ASSURANCE_MAX_WORKERS=0\`; "empty" = ${R[empty.scans]} scans, "full" = ${R[full.scans]} scans (data dir $(mib $((db_bytes / 1024))) MiB)

Latencies are the median of $REPEAT runs per endpoint and store size (runs interleaved /stats, /metrics); ratio = full / empty.

| measurement | empty store | ${R[full.scans]} scans | ratio | within ${MAX_RATIO}× |
| --- | ---: | ---: | ---: | :---: |
${rows}| VmRSS before the latency runs | $(mib "${R[empty.rss_kb]}") MiB | $(mib "${R[full.rss_kb]}") MiB | $(ratio "${R[empty.rss_kb]}" "${R[full.rss_kb]}")× | |
| VmRSS after the latency runs | $(mib "${R[empty.rss_after_kb]}") MiB | $(mib "${R[full.rss_after_kb]}") MiB | $(ratio "${R[empty.rss_after_kb]}" "${R[full.rss_after_kb]}")× | |

- Accepted submissions per second: $submit_desc; fill: $accepted submissions answered 202, none refused, in $rounds rounds of \`wrk -t$THREADS -c$FILL_CONNS -d${FILL_ROUND}s -s benches/wrk/submit.lua\` (the last round stops at the target)
- VmHWM (peak RSS) at the end: $(mib "$(hwm_kb)") MiB
- Latency target (every p50/p99 ratio ≤ ${MAX_RATIO}×): **$verdict** (largest ratio ${worst}×)
${ab_section}
Every latency run (ms; req/s; service CPU = user + system time of the service process during the
run / requests answered; CPU pressure = % of the run during which some task on the machine waited
for a CPU, from /proc/pressure/cpu — high values mean other work competed for the 2 cores):

| runs | endpoint | p50 per run | p99 per run | req/s per run | service CPU µs/request per run | CPU pressure % per run |
| --- | --- | --- | --- | --- | --- | --- |
${runs}
EOF
)

printf '%s\n' "$summary"
if [[ -n "${BENCH_OUT:-}" ]]; then
    printf '%s\n' "$summary" >"$BENCH_OUT"
    log "summary written to $BENCH_OUT"
fi
if [[ ("$verdict" == FAIL || "${ab_verdict:-PASS}" == FAIL) && "${BENCH_FAIL_ON_TARGET:-0}" == 1 ]]; then
    exit 3
fi
