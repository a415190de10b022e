#!/usr/bin/env bash
# Benchmark of the job store on SQLite and on PostgreSQL:
#   1. accepted submissions per second: SQLite, PostgreSQL with 1 replica, PostgreSQL with 3
#      replicas (CERTUS_ASSURANCE_MAX_WORKERS=0: scans are stored QUEUED and never run; load from
#      wrk with benches/wrk/submit.lua, spread over the replicas by benches/wrk/submit-replicas.lua);
#   2. list-query latency (p50/p99 from wrk --latency) of
#      GET /v1/security-scans?workspace_id=ws-042&limit=50 and of the unfiltered first page
#      (GET /v1/security-scans?limit=50) at 10,000 and at 1,000,000 stored scans, on both
#      backends; the store is filled with SQL directly (generate_series / a recursive CTE), not
#      through HTTP; one service per store size, runs alternating between the sizes; target: p50
#      and p99 at 1M within BENCH_MAX_RATIO (1.5) x those at 10k. Also the time of the list
#      statement inside each store (no HTTP) and its plan (EXPLAIN ANALYZE);
#   3. claims under contention: a queue prefilled (with SQL) with scans that fail at once (their
#      profile is unknown, so a claimed scan ends FAILED source_invalid without cloning) is
#      drained by 1 SQLite process, 1 PostgreSQL replica and 3 PostgreSQL replicas, each with
#      BENCH_CLAIM_WORKERS workers. Reported: claims per second (scans / (last finish - first
#      claim)) and the per-scan time from just before the claim statement to the recorded
#      outcome (finished_at - started_at, both written by the service), p50/p99; the claim
#      statement is most of that time. Also checks that every scan ran exactly once;
#   4. what the trigger that keeps the counts by status costs: inserts per second of the
#      service's INSERT from 1 and 8 pgbench clients, with the trigger enabled and disabled;
#   5. list filters that the runs of 2. do not cover (two filters together, time filters),
#      timed inside the store at both sizes, with PostgreSQL's plan.
#
#   scripts/bench-store.sh                          # summary to stdout
#   BENCH_OUT=/tmp/store.md scripts/bench-store.sh  # ... and as markdown in a file
#
# PostgreSQL: BENCH_PG_URL (default postgres://postgres@127.0.0.1:5432/test). Every run works in
# schemas of its own (certus_bench_<random>_<n>) that are dropped on exit. All HTTP traffic is on
# loopback; every step is bounded in time; services and temp dirs are removed on exit. A full run
# takes about 20 minutes and needs about 3 GB of disk in /tmp and in PostgreSQL.
#
# Knobs (environment):
#   BENCH_OUT                 markdown summary file (default: none)
#   BENCH_PHASES              any of "submit list claim trigger filters" (default: all five)
#   BENCH_TRIGGER_DURATION    seconds per pgbench run of the trigger phase (default 8)
#   BENCH_PORT_BASE           first of 10 consecutive loopback ports to use (default 18400)
#   BENCH_REPEAT              runs per measurement; the table shows the median (default 6)
#   BENCH_WARMUP              seconds of unrecorded wrk load before each run (default 2)
#   BENCH_SUBMIT_DURATION     seconds per submission run (default 10)
#   BENCH_SUBMIT_CONNS        wrk connections per replica for submissions (default 8)
#   BENCH_LIST_SIZES          stored scans for the list runs, smallest first (default "10000 1000000")
#   BENCH_LIST_BACKENDS       stores of the list runs (default "sqlite pg")
#   BENCH_DURATION/BENCH_CONNS  wrk -d/-c of list runs (default 10/4, one wrk thread); each store
#                             size has its own service, and the runs alternate between sizes
#   BENCH_CLAIM_SCANS         prefilled scans per claim run (default 3000)
#   BENCH_CLAIM_WORKERS       CERTUS_ASSURANCE_MAX_WORKERS per process in claim runs (default 4)
#   BENCH_CLAIM_TIMEOUT       seconds a drain may take (default 300)
#   BENCH_MAX_RATIO           list latency target, 1M / 10k (default 1.5)
#   BENCH_FAIL_ON_TARGET      1: exit 3 when a list ratio exceeds the target (default 0)
#   BENCH_BUILD_TIMEOUT       seconds the release build may take (default 1500)
#   BENCH_SKIP_BUILD          1: use the binary already in $CARGO_TARGET_DIR/release
set -euo pipefail
cd "$(dirname "$0")/.."

PG_URL=${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432/test}
PHASES=${BENCH_PHASES:-submit list claim trigger filters}
TRIGGER_DURATION=${BENCH_TRIGGER_DURATION:-8}
PORT_BASE=${BENCH_PORT_BASE:-18400}
REPEAT=${BENCH_REPEAT:-6}
WARMUP=${BENCH_WARMUP:-2}
SUBMIT_DURATION=${BENCH_SUBMIT_DURATION:-10}
SUBMIT_CONNS=${BENCH_SUBMIT_CONNS:-8}
LIST_SIZES=${BENCH_LIST_SIZES:-10000 1000000}
LIST_BACKENDS=${BENCH_LIST_BACKENDS:-sqlite pg}
DURATION=${BENCH_DURATION:-10}
CONNS=${BENCH_CONNS:-4}
CLAIM_SCANS=${BENCH_CLAIM_SCANS:-3000}
CLAIM_WORKERS=${BENCH_CLAIM_WORKERS:-4}
CLAIM_TIMEOUT=${BENCH_CLAIM_TIMEOUT:-300}
MAX_RATIO=${BENCH_MAX_RATIO:-1.5}
BUILD_TIMEOUT=${BENCH_BUILD_TIMEOUT:-1500}
LIST_WORKSPACE=ws-042
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/certus-assurance/bench-target}"
export CARGO_TERM_COLOR=never
BIN="$CARGO_TARGET_DIR/release/certus-assurance"

log() { printf '[bench-store %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"%.${2:-2}f\", $1 }"; }
median() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
        if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
field() { grep -o "\b$1=[0-9.]*" "$2" | head -n1 | cut -d= -f2; }

TMP=""
BUILD_PID=""
declare -a SERVICE_PIDS=()
declare -a SCHEMAS=()

stop_services() {
    local pid
    for pid in "${SERVICE_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${SERVICE_PIDS[@]}"; do
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    SERVICE_PIDS=()
}

cleanup() {
    local rc=$?
    if [[ -n "$BUILD_PID" ]] && kill -0 "$BUILD_PID" 2>/dev/null; then
        kill "$BUILD_PID" 2>/dev/null || true
        wait "$BUILD_PID" 2>/dev/null || true
    fi
    stop_services
    local schema
    for schema in "${SCHEMAS[@]}"; do
        psql "$PG_URL" -q -c "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 ||
            log "could not drop schema $schema; drop it by hand"
    done
    [[ -n "$TMP" && -d "$TMP" ]] && rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------------
# Tools and binary
need_pkgs=()
command -v wrk >/dev/null 2>&1 || need_pkgs+=(wrk)
command -v sqlite3 >/dev/null 2>&1 || need_pkgs+=(sqlite3)
command -v psql >/dev/null 2>&1 || need_pkgs+=(postgresql-client)
if ((${#need_pkgs[@]})); then
    log "installing ${need_pkgs[*]} from Debian"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y "${need_pkgs[@]}" >/dev/null 2>&1; then
        apt-get update >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y "${need_pkgs[@]}" >/dev/null
    fi
fi
for tool in wrk sqlite3 psql curl awk ss; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is required"
done
psql "$PG_URL" -qtA -c 'SELECT 1' >/dev/null 2>&1 ||
    die "PostgreSQL does not answer at $PG_URL (set BENCH_PG_URL)"

TMP=$(mktemp -d /tmp/certus-bench-store.XXXXXX)

if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
    log "building the release binary (CARGO_TARGET_DIR=$CARGO_TARGET_DIR, at most ${BUILD_TIMEOUT}s)"
    cargo build --release --locked >"$TMP/build.log" 2>&1 &
    BUILD_PID=$!
    waited=0
    while kill -0 "$BUILD_PID" 2>/dev/null; do
        sleep 5
        waited=$((waited + 5))
        ((waited % 60 == 0)) && log "  still building (${waited}s): $(tail -n1 "$TMP/build.log")"
        if ((waited >= BUILD_TIMEOUT)); then
            kill "$BUILD_PID" 2>/dev/null || true
            die "release build did not finish in ${BUILD_TIMEOUT}s"
        fi
    done
    if ! wait "$BUILD_PID"; then
        BUILD_PID=""
        tail -n 40 "$TMP/build.log" >&2
        die "release build failed"
    fi
    BUILD_PID=""
fi
[[ -x "$BIN" ]] || die "no binary at $BIN"

port_free() { [[ -z "$(ss -Htln "sport = :$1" 2>/dev/null)" ]]; }
for i in $(seq 0 9); do
    port_free $((PORT_BASE + i)) || die "port $((PORT_BASE + i)) is in use; set BENCH_PORT_BASE"
done

# ---------------------------------------------------------------------------------------------
# Services and stores

SCHEMA_SEQ=0
SCHEMA=""
new_schema() { # new_schema: creates a schema (dropped on exit) and sets SCHEMA to its name
    local rand
    rand=$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')
    SCHEMA_SEQ=$((SCHEMA_SEQ + 1))
    SCHEMA="certus_bench_${rand}_${SCHEMA_SEQ}"
    psql "$PG_URL" -q -v ON_ERROR_STOP=1 -c "CREATE SCHEMA $SCHEMA" >/dev/null
    SCHEMAS+=("$SCHEMA")
}
schema_url() { # schema_url SCHEMA -> database URL whose connections use SCHEMA
    local sep='?'
    [[ "$PG_URL" == *\?* ]] && sep='&'
    echo "${PG_URL}${sep}options=-csearch_path%3D$1"
}
pg() { # pg SCHEMA SQL -> rows, unaligned
    psql "$PG_URL" -qtA -v ON_ERROR_STOP=1 -c "SET search_path TO $1" -c "$2"
}
sq() { # sq DBFILE SQL -> rows
    sqlite3 -batch -bail "$1" "$2"
}

# start_service NAME PORT STORE WORKERS [REPLICA_ID]; STORE is a sqlite:// or postgres:// URL.
start_service() {
    local name=$1 port=$2 store=$3 workers=$4 replica=${5:-$1}
    mkdir -p "$TMP/$name"
    (
        export CERTUS_ASSURANCE_DATA_DIR="$TMP/$name"
        export CERTUS_ASSURANCE_ARTIFACT_ROOT="$TMP/artifacts"
        export CERTUS_ASSURANCE_DATABASE_URL="$store"
        export CERTUS_ASSURANCE_MAX_WORKERS="$workers"
        export CERTUS_ASSURANCE_MAX_QUEUE=10000000
        export CERTUS_ASSURANCE_REPLICA_ID="$replica"
        export CERTUS_ASSURANCE_LOG_LEVEL=warn
        export CERTUS_ASSURANCE_LOG_FORMAT=json
        export CERTUS_ASSURANCE_LISTEN_ADDR="127.0.0.1:$port"
        exec "$BIN" serve
    ) >>"$TMP/$name.log" 2>&1 &
    local pid=$!
    SERVICE_PIDS+=("$pid")
    for _ in $(seq 1 300); do
        kill -0 "$pid" 2>/dev/null || { tail -n 20 "$TMP/$name.log" >&2; die "$name exited at start-up"; }
        curl -fsS --max-time 2 "http://127.0.0.1:$port/health" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    die "$name did not answer /health in 60s"
}
total_scans() { curl -fsS --max-time 10 "http://127.0.0.1:$1/stats" | grep -o '"total_scans":[0-9]*' | cut -d: -f2; }

cpu_pressure_us() {
    awk -F'total=' '/^some/ { print $2; found = 1 } END { if (!found) print 0 }' /proc/pressure/cpu 2>/dev/null || echo 0
}

run_wrk() { # run_wrk OUT DURATION THREADS CONNS SCRIPT URL
    timeout $(($2 + 30)) wrk -t"$3" -c"$4" -d"${2}s" --latency -s "$5" "$6" >"$1" 2>&1 ||
        { cat "$1" >&2; die "wrk failed: $6"; }
}

declare -A R

# ---------------------------------------------------------------------------------------------
# 1. Submissions per second

submit_runs() { # submit_runs KEY PORT...: BENCH_REPEAT runs spread over the given replicas
    local key=$1
    shift
    local n=$# targets="" p rep out
    for p in "$@"; do targets+="${targets:+,}127.0.0.1:$p"; done
    export BENCH_TARGETS=$targets
    local url="http://127.0.0.1:$1/v1/security-scans"
    local rates=() p50s=() p99s=() psis=()
    for rep in $(seq 1 "$REPEAT"); do
        run_wrk "$TMP/warmup.txt" "$WARMUP" "$n" $((SUBMIT_CONNS * n)) benches/wrk/submit-replicas.lua "$url"
        out="$TMP/submit-$key-$rep.txt"
        local psi0 psi1
        psi0=$(cpu_pressure_us)
        run_wrk "$out" "$SUBMIT_DURATION" "$n" $((SUBMIT_CONNS * n)) benches/wrk/submit-replicas.lua "$url"
        psi1=$(cpu_pressure_us)
        grep -q '^BENCH_SUBMIT' "$out" || { cat "$out" >&2; die "no result line from the submit run"; }
        local accepted other dur errs k
        accepted=$(field accepted "$out")
        other=$(field other "$out")
        dur=$(field duration_us "$out")
        errs=0
        for k in connect_errors read_errors write_errors timeouts; do errs=$((errs + $(field "$k" "$out"))); done
        ((other == 0 && errs == 0)) ||
            die "$key run $rep: $other answers other than 202 (last $(field last_other_status "$out")), $errs socket errors"
        rates+=("$(calc "$accepted / ($dur / 1000000)" 0)")
        p50s+=("$(calc "$(field p50_us "$out") / 1000" 2)")
        p99s+=("$(calc "$(field p99_us "$out") / 1000" 2)")
        psis+=("$(calc "100 * ($psi1 - $psi0) / $dur" 0)")
        log "  $key #$rep: ${rates[-1]} accepted/s, p50 ${p50s[-1]} ms, p99 ${p99s[-1]} ms, cpu-pressure ${psis[-1]}%"
    done
    unset BENCH_TARGETS
    R[submit.$key.rate]=$(median "${rates[@]}")
    R[submit.$key.rates]="${rates[*]}"
    R[submit.$key.p50]=$(median "${p50s[@]}")
    R[submit.$key.p99]=$(median "${p99s[@]}")
    R[submit.$key.psi]="${psis[*]}"
}

phase_submit() {
    log "submissions: SQLite, 1 process"
    start_service submit-sqlite "$PORT_BASE" "sqlite://$TMP/submit-sqlite.db" 0
    submit_runs sqlite "$PORT_BASE"
    stop_services

    local schema
    new_schema
    schema=$SCHEMA
    log "submissions: PostgreSQL, 1 replica (schema $schema)"
    start_service submit-pg1 "$PORT_BASE" "$(schema_url "$schema")" 0
    submit_runs pg1 "$PORT_BASE"
    stop_services

    new_schema
    schema=$SCHEMA
    log "submissions: PostgreSQL, 3 replicas (schema $schema)"
    local i ports=()
    for i in 0 1 2; do
        start_service "submit-pg3-$i" $((PORT_BASE + i)) "$(schema_url "$schema")" 0
        ports+=($((PORT_BASE + i)))
    done
    submit_runs pg3 "${ports[@]}"
    stop_services
    R[submit.pg3.check]=$(pg "$schema" "SELECT count(*) || ' rows, ' || count(DISTINCT test_id) || ' distinct ids' FROM scans")
}

# ---------------------------------------------------------------------------------------------
# 2. List queries at 10k and 1M scans

source scripts/bench-lib.sh # SUMMARY, ARTIFACTS, T0, fill_sqlite

fill_pg() { # fill_pg SCHEMA FROM TO
    local schema=$1 from=$2 to=$3
    pg "$schema" "
        ALTER TABLE scans DISABLE TRIGGER scans_count_changes;
        INSERT INTO scans (test_id, workspace_id, component_id, assessment_id, source_type, git_url,
            branch, profile, manifest_digest, timeout_seconds, status, failure_reason, errors_json,
            resolved_commit, resolved_branch, summary_json, artifacts_json, submitted_at, started_at,
            finished_at, attempts, upload_status)
        SELECT 'test_' || lpad(to_hex(n), 12, '0'),
               'ws-' || lpad((n % 100)::text, 3, '0'), 'component-' || (n % 1000),
               'assessment-' || (n % 50), 'git',
               'https://git.example.com/org/repo-' || (n % 1000) || '.git', 'main',
               (ARRAY['light', 'standard', 'polyglot'])[1 + n % 3],
               'sha256:' || md5((n % 3)::text) || md5((n % 3)::text), 600,
               CASE WHEN n % 10 = 0 THEN 'FAILED' ELSE 'SUCCEEDED' END,
               CASE WHEN n % 10 = 0 THEN 'clone_failed' END,
               CASE WHEN n % 10 = 0
                    THEN '[\"could not clone https://git.example.com/org/repo.git: connection refused\"]'
                    ELSE '[]' END,
               md5(n::text) || substr(md5(n::text), 1, 8), 'main',
               CASE WHEN n % 10 = 0 THEN NULL ELSE '$SUMMARY' END, '$ARTIFACTS',
               $T0 + n * 0.5, $T0 + n * 0.5 + 1, $T0 + n * 0.5 + 20, 1, 'pending'
        FROM generate_series($from, $to) AS n;
        DELETE FROM scan_counts;
        INSERT INTO scan_counts SELECT 'status', status, count(*) FROM scans GROUP BY status;
        INSERT INTO scan_counts SELECT 'upload', upload_status, count(*) FROM scans GROUP BY upload_status;
        ALTER TABLE scans ENABLE TRIGGER scans_count_changes;" >/dev/null
    pg "$schema" "VACUUM ANALYZE scans" >/dev/null
}

# The statements the service runs for the two list requests (limit 50 + 1 look-ahead row).
COLUMNS="test_id, workspace_id, component_id, assessment_id, source_type, git_url, branch, requested_commit, directory_path, archive_path, requested_by, profile, manifest_digest, timeout_seconds, status, failure_reason, errors_json, resolved_commit, resolved_branch, summary_json, artifacts_json, submitted_at, started_at, finished_at, attempts, upload_status, upload_permission_id, verification_proof_json, remote_artifacts_json"
SQL_WORKSPACE="SELECT seq, $COLUMNS FROM scans WHERE TRUE AND workspace_id = '$LIST_WORKSPACE' ORDER BY submitted_at DESC, seq DESC LIMIT 51"
SQL_FIRST="SELECT seq, $COLUMNS FROM scans WHERE TRUE ORDER BY submitted_at DESC, seq DESC LIMIT 51"

# Time of the list statement inside the store, free of HTTP and of most of the machine's noise:
# PostgreSQL: median "Execution Time" of 21 EXPLAIN ANALYZE runs; SQLite: mean over 500 runs in
# one sqlite3 process, minus the same number of `SELECT 1`.
stmt_ms_pg() { # stmt_ms_pg SCHEMA SQL [RUNS]
    local args=() i
    for i in $(seq 1 "${3:-21}"); do args+=(-c "EXPLAIN ANALYZE $2"); done
    # shellcheck disable=SC2046
    median $(psql "$PG_URL" -qtA -v ON_ERROR_STOP=1 -c "SET search_path TO $1" "${args[@]}" |
        grep -o 'Execution Time: [0-9.]*' | cut -d' ' -f3)
}
stmt_ms_sqlite() { # stmt_ms_sqlite DBFILE SQL [RUNS]
    local i t0 t1 t2 runs=${3:-500}
    for i in $(seq 1 "$runs"); do echo "$2;"; done >"$TMP/stmt.sql"
    for i in $(seq 1 "$runs"); do echo "SELECT 1;"; done >"$TMP/base.sql"
    sqlite3 "$1" <"$TMP/stmt.sql" >/dev/null # warm the page cache
    t0=$(now)
    sqlite3 "$1" <"$TMP/stmt.sql" >/dev/null
    t1=$(now)
    sqlite3 "$1" <"$TMP/base.sql" >/dev/null
    t2=$(now)
    calc "1000 * (($t1 - $t0) - ($t2 - $t1)) / $runs" 3
}

# list_measure BACKEND SIZE=PORT...: every store size is served by its own service, and the runs
# are interleaved (size after size, request after request, round after round, the sizes in
# reverse order in every other round), so that load from elsewhere on the machine affects every
# size alike.
list_measure() {
    local backend=$1
    shift
    local -A ports=()
    local pair size port ep rep out
    for pair in "$@"; do ports[${pair%%=*}]=${pair#*=}; done
    local -A eps=([workspace]="/v1/security-scans?workspace_id=$LIST_WORKSPACE&limit=50" [first]="/v1/security-scans?limit=50")
    local -A p50 p99 rps psi
    for size in $LIST_SIZES; do
        local count
        count=$(curl -fsS --max-time 10 "http://127.0.0.1:${ports[$size]}${eps[workspace]}" | grep -o '"count":[0-9]*' | cut -d: -f2)
        [[ "$count" == 50 ]] || die "$backend at $size: the workspace page has $count scans, not 50"
    done
    local order
    for rep in $(seq 1 "$REPEAT"); do
        # Odd rounds go from the smallest store to the largest, even rounds the other way.
        order=$LIST_SIZES
        ((rep % 2 == 0)) && order=$(printf '%s\n' $LIST_SIZES | tac | tr '\n' ' ')
        for ep in workspace first; do
            for size in $order; do
                local url="http://127.0.0.1:${ports[$size]}${eps[$ep]}" key="$size.$ep"
                run_wrk "$TMP/warmup.txt" "$WARMUP" 1 "$CONNS" benches/wrk/report.lua "$url"
                out="$TMP/list-$backend-$size-$ep-$rep.txt"
                local psi0 psi1 errs=0 k
                psi0=$(cpu_pressure_us)
                run_wrk "$out" "$DURATION" 1 "$CONNS" benches/wrk/report.lua "$url"
                psi1=$(cpu_pressure_us)
                grep -q '^BENCH_RESULT' "$out" || { cat "$out" >&2; die "no result line from wrk"; }
                for k in status_errors connect_errors read_errors write_errors timeouts; do
                    errs=$((errs + $(field "$k" "$out")))
                done
                ((errs == 0)) || { cat "$out" >&2; die "$url answered with $errs errors"; }
                p50[$key]+="$(calc "$(field p50_us "$out") / 1000" 3) "
                p99[$key]+="$(calc "$(field p99_us "$out") / 1000" 3) "
                rps[$key]+="$(calc "$(field requests "$out") / ($(field duration_us "$out") / 1000000)" 0) "
                psi[$key]+="$(calc "100 * ($psi1 - $psi0) / $(field duration_us "$out")" 0) "
                log "  $backend $size $ep #$rep: p50 $(calc "$(field p50_us "$out") / 1000" 3) ms, p99 $(calc "$(field p99_us "$out") / 1000" 3) ms"
            done
        done
    done
    for size in $LIST_SIZES; do
        for ep in workspace first; do
            local key="$size.$ep"
            # shellcheck disable=SC2086
            R[list.$backend.$key.p50]=$(median ${p50[$key]})
            # shellcheck disable=SC2086
            R[list.$backend.$key.p99]=$(median ${p99[$key]})
            R[list.$backend.$key.runs]="p50 ${p50[$key]% }; p99 ${p99[$key]% }; req/s ${rps[$key]% }; cpu-pressure % ${psi[$key]% }"
        done
    done
}

phase_list() {
    [[ " $LIST_BACKENDS " == *" sqlite "* ]] && list_sqlite
    [[ " $LIST_BACKENDS " == *" pg "* ]] && list_pg
    return 0
}

list_sqlite() {
    local size i t0 pairs=()
    # SQLite: one database file per size
    for size in $LIST_SIZES; do
        local db="$TMP/list-sqlite-$size.db"
        start_service "list-sqlite-$size" "$PORT_BASE" "sqlite://$db" 0 # creates the schema
        stop_services
        log "list: SQLite, filling a store with $size scans"
        t0=$(now)
        fill_sqlite "$db" 1 "$size"
        R[fill.sqlite.$size]=$(calc "$(now) - $t0" 1)
        R[size.sqlite.$size]=$(du -sh "$db" | cut -f1)
    done
    i=0
    for size in $LIST_SIZES; do
        local db="$TMP/list-sqlite-$size.db"
        start_service "list-sqlite-$size" $((PORT_BASE + i)) "sqlite://$db" 0
        [[ "$(total_scans $((PORT_BASE + i)))" == "$size" ]] || die "SQLite store does not hold $size scans"
        pairs+=("$size=$((PORT_BASE + i))")
        i=$((i + 1))
    done
    list_measure sqlite "${pairs[@]}"
    stop_services
    for size in $LIST_SIZES; do
        R[plan.sqlite.$size.workspace]=$(sq "$TMP/list-sqlite-$size.db" "EXPLAIN QUERY PLAN $SQL_WORKSPACE" | tr '\n' ' ')
        R[plan.sqlite.$size.first]=$(sq "$TMP/list-sqlite-$size.db" "EXPLAIN QUERY PLAN $SQL_FIRST" | tr '\n' ' ')
        R[stmt.sqlite.$size.workspace]=$(stmt_ms_sqlite "$TMP/list-sqlite-$size.db" "$SQL_WORKSPACE")
        R[stmt.sqlite.$size.first]=$(stmt_ms_sqlite "$TMP/list-sqlite-$size.db" "$SQL_FIRST")
    done

}

list_pg() {
    local size i t0 pairs=()
    # PostgreSQL: one schema per size
    local -A schema_of=()
    i=0
    for size in $LIST_SIZES; do
        new_schema
        schema_of[$size]=$SCHEMA
        start_service "list-pg-$size" "$PORT_BASE" "$(schema_url "$SCHEMA")" 0 # applies the migrations
        stop_services
        log "list: PostgreSQL, filling a store with $size scans (schema $SCHEMA)"
        t0=$(now)
        fill_pg "$SCHEMA" 1 "$size"
        R[fill.pg.$size]=$(calc "$(now) - $t0" 1)
        R[size.pg.$size]=$(pg "$SCHEMA" "SELECT pg_size_pretty(pg_total_relation_size('scans'))")
    done
    for size in $LIST_SIZES; do
        start_service "list-pg-$size" $((PORT_BASE + i)) "$(schema_url "${schema_of[$size]}")" 0
        [[ "$(total_scans $((PORT_BASE + i)))" == "$size" ]] || die "PostgreSQL store does not hold $size scans"
        pairs+=("$size=$((PORT_BASE + i))")
        i=$((i + 1))
    done
    list_measure pg "${pairs[@]}"
    stop_services
    for size in $LIST_SIZES; do
        pg "${schema_of[$size]}" "EXPLAIN (ANALYZE, BUFFERS) $SQL_WORKSPACE" >"$TMP/plan-pg-$size-workspace.txt"
        pg "${schema_of[$size]}" "EXPLAIN (ANALYZE, BUFFERS) $SQL_FIRST" >"$TMP/plan-pg-$size-first.txt"
        R[stmt.pg.$size.workspace]=$(stmt_ms_pg "${schema_of[$size]}" "$SQL_WORKSPACE")
        R[stmt.pg.$size.first]=$(stmt_ms_pg "${schema_of[$size]}" "$SQL_FIRST")
    done
}

# Filters the HTTP runs above do not cover, timed inside the store only (no HTTP): filters that
# combine two columns, and the time filters (the service turns submitted_before into a bound on
# the list key (submitted_at, seq), as it does with a cursor).
FILTER_NAMES="ws_status ws_component status after_recent before_old"
filter_where() { # filter_where NAME SIZE -> the WHERE condition the service builds
    case $1 in
        ws_status) echo "workspace_id = '$LIST_WORKSPACE' AND status = 'FAILED'" ;;
        ws_component) echo "workspace_id = '$LIST_WORKSPACE' AND component_id = 'component-43'" ;;
        status) echo "status = 'FAILED'" ;;
        after_recent) echo "submitted_at >= $(calc "$T0 + $2 * 0.5 - 100" 1)" ;;
        before_old) echo "(submitted_at, seq) < ($(calc "$T0 + 1000" 1), -9223372036854775808)" ;;
    esac
}
filter_desc() {
    case $1 in
        ws_status) echo "\`workspace_id=$LIST_WORKSPACE&status=FAILED\` (matches none: no scan of this workspace failed)" ;;
        ws_component) echo "\`workspace_id=$LIST_WORKSPACE&component_id=component-43\` (matches none)" ;;
        status) echo "\`status=FAILED\` (one scan in ten)" ;;
        after_recent) echo "\`submitted_after=<the 200 newest scans>\`" ;;
        before_old) echo "\`submitted_before=<the 2,000 oldest scans>\`" ;;
    esac
}

phase_filters() {
    local size f where sql
    local -A schema_of=()
    for size in $LIST_SIZES; do
        local db="$TMP/filters-sqlite-$size.db"
        start_service "filters-init" "$PORT_BASE" "sqlite://$db" 0
        stop_services
        new_schema
        schema_of[$size]=$SCHEMA
        start_service "filters-init" "$PORT_BASE" "$(schema_url "$SCHEMA")" 0
        stop_services
        log "filters: filling SQLite and PostgreSQL stores with $size scans"
        fill_sqlite "$db" 1 "$size"
        fill_pg "$SCHEMA" 1 "$size"
        for f in $FILTER_NAMES; do
            where=$(filter_where "$f" "$size")
            sql="SELECT seq, $COLUMNS FROM scans WHERE TRUE AND $where ORDER BY submitted_at DESC, seq DESC LIMIT 51"
            R[filter.pg.$size.$f]=$(stmt_ms_pg "$SCHEMA" "$sql" 11)
            R[filter.sqlite.$size.$f]=$(stmt_ms_sqlite "$db" "$sql" 50)
            pg "$SCHEMA" "EXPLAIN (ANALYZE) $sql" >"$TMP/filter-pg-$size-$f.txt"
            R[filter.pgplan.$size.$f]=$(grep -m1 'Scan' "$TMP/filter-pg-$size-$f.txt" | sed 's/ *(cost.*//; s/^ *-> *//')
            R[filter.pgremoved.$size.$f]=$(grep -o 'Rows Removed by Filter: [0-9]*' "$TMP/filter-pg-$size-$f.txt" | head -n1 | cut -d' ' -f5 || true)
            R[filter.sqliteplan.$size.$f]=$(sq "$db" "EXPLAIN QUERY PLAN $sql" | tail -n +2 | sed 's/^[`|-]*//' | tr '\n' ' ')
            log "  $size $f: PostgreSQL ${R[filter.pg.$size.$f]} ms, SQLite ${R[filter.sqlite.$size.$f]} ms"
        done
        rm -f "$db"
    done
}

# ---------------------------------------------------------------------------------------------
# 3. Claims under contention

# A queued scan with an unknown profile: a worker claims it and fails it at once
# (source_invalid), without cloning.
claim_insert_columns="test_id, workspace_id, component_id, assessment_id, source_type, git_url, branch, profile, manifest_digest, timeout_seconds, status, submitted_at, upload_status"

claim_run() { # claim_run KEY BACKEND PROCESSES
    local key=$1 backend=$2 procs=$3 store schema="" db="" i
    local now_s
    now_s=$(date +%s)
    if [[ "$backend" == pg ]]; then
        new_schema
        schema=$SCHEMA
        store=$(schema_url "$schema")
    else
        db="$TMP/claim-$key.db"
        store="sqlite://$db"
    fi
    start_service "claim-$key-init" "$PORT_BASE" "$store" 0 # migrations
    stop_services
    if [[ "$backend" == pg ]]; then
        pg "$schema" "INSERT INTO scans ($claim_insert_columns)
            SELECT 'test_' || lpad(to_hex(n), 12, '0'), 'ws-claim', 'c', 'a', 'git',
                   'https://git.example.com/org/repo.git', 'main', 'fail-fast', 'sha256:x', 600,
                   'QUEUED', $now_s + n * 0.000001, 'pending'
            FROM generate_series(1, $CLAIM_SCANS) AS n" >/dev/null
        pg "$schema" "VACUUM ANALYZE scans" >/dev/null
    else
        sq "$db" "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < $CLAIM_SCANS)
            INSERT INTO scans ($claim_insert_columns)
            SELECT printf('test_%012x', n), 'ws-claim', 'c', 'a', 'git',
                   'https://git.example.com/org/repo.git', 'main', 'fail-fast', 'sha256:x', 600,
                   'QUEUED', $now_s + n * 0.000001, 'pending' FROM g" >/dev/null
    fi
    local query_left="SELECT count(*) FROM scans WHERE status IN ('QUEUED', 'RUNNING')"
    log "claims: $key: $procs process(es) x $CLAIM_WORKERS workers draining $CLAIM_SCANS scans"
    local t0
    t0=$(now)
    for i in $(seq 0 $((procs - 1))); do
        start_service "claim-$key-$i" $((PORT_BASE + i)) "$store" "$CLAIM_WORKERS" "claim-$key-$i"
    done
    local left
    while :; do
        if [[ "$backend" == pg ]]; then left=$(pg "$schema" "$query_left"); else left=$(sq "$db" "$query_left"); fi
        ((left == 0)) && break
        (($(calc "$(now) - $t0" 0) < CLAIM_TIMEOUT)) || die "$key: $left scans still queued or running after ${CLAIM_TIMEOUT}s"
        sleep 0.5
    done
    stop_services
    local stats_sql="SELECT count(*), sum(CASE WHEN attempts = 1 THEN 1 ELSE 0 END),
        sum(CASE WHEN failure_reason = 'source_invalid' THEN 1 ELSE 0 END),
        max(finished_at) - min(started_at) FROM scans"
    local stats
    if [[ "$backend" == pg ]]; then
        stats=$(pg "$schema" "$stats_sql")
        R[claim.$key.p50]=$(pg "$schema" "SELECT round((1000 * percentile_disc(0.5) WITHIN GROUP (ORDER BY finished_at - started_at))::numeric, 2) FROM scans")
        R[claim.$key.p99]=$(pg "$schema" "SELECT round((1000 * percentile_disc(0.99) WITHIN GROUP (ORDER BY finished_at - started_at))::numeric, 2) FROM scans")
    else
        stats=$(sq "$db" "$stats_sql")
        local n
        n=$(sq "$db" "SELECT count(*) FROM scans")
        R[claim.$key.p50]=$(sq "$db" "SELECT round(1000 * (finished_at - started_at), 2) FROM scans ORDER BY finished_at - started_at LIMIT 1 OFFSET $((n * 50 / 100))")
        R[claim.$key.p99]=$(sq "$db" "SELECT round(1000 * (finished_at - started_at), 2) FROM scans ORDER BY finished_at - started_at LIMIT 1 OFFSET $((n * 99 / 100))")
    fi
    local total once invalid span
    IFS='|' read -r total once invalid span <<<"$stats"
    ((total == CLAIM_SCANS && once == CLAIM_SCANS && invalid == CLAIM_SCANS)) ||
        die "$key: $total scans, $once run exactly once, $invalid failed source_invalid (expected $CLAIM_SCANS each)"
    R[claim.$key.rate]=$(calc "$total / $span" 0)
    R[claim.$key.span]=$(calc "$span" 2)
    log "  $key: $(calc "$total / $span" 0) claims/s, claim-to-outcome p50 ${R[claim.$key.p50]} ms, p99 ${R[claim.$key.p99]} ms"
}

phase_claim() {
    claim_run sqlite sqlite 1
    claim_run pg1 pg 1
    claim_run pg3 pg 3
}

# ---------------------------------------------------------------------------------------------
# 4. Cost of the trigger-kept counts: single-row inserts into scans (the service's insert),
#    from 1 and 8 pgbench clients, with the counting trigger enabled and disabled.

phase_trigger() {
    command -v pgbench >/dev/null 2>&1 || die "pgbench is required (Debian postgresql-client)"
    new_schema
    local schema=$SCHEMA mode c out
    start_service trigger-init "$PORT_BASE" "$(schema_url "$schema")" 0 # migrations
    stop_services
    cat >"$TMP/insert.sql" <<'SQL'
INSERT INTO scans (test_id, workspace_id, component_id, assessment_id, source_type, git_url, branch,
    profile, manifest_digest, timeout_seconds, status, errors_json, submitted_at, upload_status)
VALUES ('test_' || substr(md5(random()::text), 1, 12), 'bench', 'c', 'a', 'git',
    'https://example.com/org/repo.git', 'main', 'light', 'sha256:x', 600, 'QUEUED', '[]',
    extract(epoch FROM clock_timestamp()), 'pending');
SQL
    for mode in on off; do
        if [[ $mode == off ]]; then
            pg "$schema" "ALTER TABLE scans DISABLE TRIGGER scans_count_changes" >/dev/null
        fi
        for c in 1 8; do
            out="$TMP/pgbench-$mode-$c.txt"
            PGOPTIONS="-c search_path=$schema" timeout $((TRIGGER_DURATION + 30)) \
                pgbench -n -c "$c" -j 2 -T "$TRIGGER_DURATION" -f "$TMP/insert.sql" "$PG_URL" >"$out" 2>&1 ||
                { cat "$out" >&2; die "pgbench failed"; }
            R[trigger.$mode.$c.tps]=$(awk '/^tps/ { printf "%.0f", $3 }' "$out")
            R[trigger.$mode.$c.lat]=$(awk '/^latency average/ { print $4 }' "$out")
            log "  inserts, trigger $mode, $c clients: ${R[trigger.$mode.$c.tps]}/s, ${R[trigger.$mode.$c.lat]} ms"
        done
    done
    pg "$schema" "ALTER TABLE scans ENABLE TRIGGER scans_count_changes" >/dev/null
}

# ---------------------------------------------------------------------------------------------
# Run

START_DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
for phase in $PHASES; do
    case $phase in
        submit) phase_submit ;;
        list) phase_list ;;
        claim) phase_claim ;;
        trigger) phase_trigger ;;
        filters) phase_filters ;;
        *) die "unknown phase $phase (use submit, list, claim, trigger, filters)" ;;
    esac
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------------------------------------
# Summary

rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=""
[[ -n "$(git status --porcelain -- src migrations Cargo.toml Cargo.lock 2>/dev/null)" ]] && dirty=" (+ uncommitted changes)"
cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
mem_total=$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
pg_facts=$(psql "$PG_URL" -qtA -c "SELECT 'PostgreSQL ' || current_setting('server_version') || ' (shared_buffers ' || current_setting('shared_buffers') || ', synchronous_commit ' || current_setting('synchronous_commit') || ', fsync ' || current_setting('fsync') || ')'")
sqlite_version=$(awk '/^name = "libsqlite3-sys"/ { getline; gsub(/"/, "", $3); print $3 }' Cargo.lock)
verdict=PASS
worst=0
declare -A RATIO
if [[ " $PHASES " == *" list "* ]]; then
    sizes=($LIST_SIZES)
    small=${sizes[0]}
    large=${sizes[-1]}
    for b in $LIST_BACKENDS; do
        for ep in workspace first; do
            for q in p50 p99; do
                r=$(calc "${R[list.$b.$large.$ep.$q]} / ${R[list.$b.$small.$ep.$q]}" 2)
                RATIO[$b.$ep.$q]=$r
                if awk "BEGIN { exit !($r > $MAX_RATIO) }"; then verdict=FAIL; fi
                if awk "BEGIN { exit !($r > $worst) }"; then worst=$r; fi
            done
        done
    done
fi

summary=$({
    echo "### Run of $START_DATE"
    echo
    echo "- Revision \`$rev\`$dirty, release build. Machine: $(nproc) CPUs ($cpu_model), $mem_total RAM, Linux $(uname -r); load average $LOAD_START at the start, $LOAD_END at the end"
    echo "- $pg_facts on the same machine, 127.0.0.1:5432; SQLite bundled (libsqlite3-sys $sqlite_version), WAL, synchronous=NORMAL; $( (wrk --version 2>&1 || true) | head -n1 | cut -d' ' -f1-2)"
    echo "- Each figure is the median of $REPEAT runs after a ${WARMUP}s warm-up; CPU pressure = % of a run during which some task waited for a CPU (/proc/pressure/cpu)"
    if [[ " $PHASES " == *" submit "* ]]; then
        echo
        echo "**Accepted submissions per second** (\`CERTUS_ASSURANCE_MAX_WORKERS=0\`; \`wrk -t<replicas> -c$((SUBMIT_CONNS))×<replicas> -d${SUBMIT_DURATION}s -s benches/wrk/submit-replicas.lua\`, every answer \`202\`):"
        echo
        echo "| store | accepted/s | latency p50 | latency p99 | runs (accepted/s) | CPU pressure % |"
        echo "| --- | ---: | ---: | ---: | --- | --- |"
        for k in sqlite pg1 pg3; do
            case $k in sqlite) label="SQLite, 1 process" ;; pg1) label="PostgreSQL, 1 replica" ;; pg3) label="PostgreSQL, 3 replicas" ;; esac
            echo "| $label | **${R[submit.$k.rate]}** | ${R[submit.$k.p50]} ms | ${R[submit.$k.p99]} ms | ${R[submit.$k.rates]// / \/ } | ${R[submit.$k.psi]// / \/ } |"
        done
        echo
        echo "3 replicas: ${R[submit.pg3.check]} in the shared store after the runs."
    fi
    if [[ " $PHASES " == *" list "* ]]; then
        echo
        fills=""
        [[ " $LIST_BACKENDS " == *" sqlite "* ]] &&
            fills+="SQLite $small rows in ${R[fill.sqlite.$small]}s (${R[size.sqlite.$small]} on disk), $large rows in ${R[fill.sqlite.$large]}s (${R[size.sqlite.$large]}); "
        [[ " $LIST_BACKENDS " == *" pg "* ]] &&
            fills+="PostgreSQL $small rows in ${R[fill.pg.$small]}s (table ${R[size.pg.$small]}), $large rows in ${R[fill.pg.$large]}s (table ${R[size.pg.$large]}), \`VACUUM ANALYZE\` after each fill"
        echo "**List queries** (\`wrk -t1 -c$CONNS -d${DURATION}s --latency\`, one service per store size, runs interleaved across sizes, the order of the sizes reversed in every other round; stores filled with SQL with finished scans of 100 workspaces: ${fills%; }):"
        echo
        echo "| store | request | p50 at $small | p50 at $large | ratio | p99 at $small | p99 at $large | ratio | within ${MAX_RATIO}× |"
        echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | :---: |"
        for b in $LIST_BACKENDS; do
            for ep in workspace first; do
                case $ep in workspace) req="\`?workspace_id=$LIST_WORKSPACE&limit=50\`" ;; first) req="\`?limit=50\` (first page)" ;; esac
                a50=${R[list.$b.$small.$ep.p50]} b50=${R[list.$b.$large.$ep.p50]}
                a99=${R[list.$b.$small.$ep.p99]} b99=${R[list.$b.$large.$ep.p99]}
                r50=${RATIO[$b.$ep.p50]} r99=${RATIO[$b.$ep.p99]}
                ok=yes
                for r in $r50 $r99; do
                    if awk "BEGIN { exit !($r > $MAX_RATIO) }"; then ok=NO; fi
                done
                echo "| $([[ $b == pg ]] && echo PostgreSQL || echo SQLite) | $req | ${a50} ms | ${b50} ms | ${r50}× | ${a99} ms | ${b99} ms | ${r99}× | $ok |"
            done
        done
        echo
        echo "List target (every ratio ≤ ${MAX_RATIO}×): **$verdict** (largest ratio ${worst}×). Every run:"
        echo
        for b in $LIST_BACKENDS; do
            for size in $LIST_SIZES; do
                for ep in workspace first; do
                    echo "- $b, $size scans, $ep: ${R[list.$b.$size.$ep.runs]}"
                done
            done
        done
        echo
        echo "Time of the list statement inside the store (no HTTP; PostgreSQL: median \`Execution Time\` of 21 \`EXPLAIN ANALYZE\`; SQLite: mean of 500 runs in the sqlite3 shell, less as many \`SELECT 1\`):"
        echo
        echo "| store | request | at $small | at $large | ratio |"
        echo "| --- | --- | ---: | ---: | ---: |"
        for b in $LIST_BACKENDS; do
            for ep in workspace first; do
                echo "| $([[ $b == pg ]] && echo PostgreSQL || echo SQLite) | $ep | ${R[stmt.$b.$small.$ep]} ms | ${R[stmt.$b.$large.$ep]} ms | $(calc "${R[stmt.$b.$large.$ep]} / ${R[stmt.$b.$small.$ep]}" 2)× |"
            done
        done
        echo
        echo "Plans at $large scans:"
        echo
        [[ " $LIST_BACKENDS " == *" sqlite "* ]] &&
            echo "- SQLite, workspace: \`${R[plan.sqlite.$large.workspace]}\`; first page: \`${R[plan.sqlite.$large.first]}\`"
        if [[ " $LIST_BACKENDS " == *" pg "* ]]; then
            echo "- PostgreSQL, workspace:"
            echo
            echo '```'
            cat "$TMP/plan-pg-$large-workspace.txt"
            echo '```'
            echo
            echo "- PostgreSQL, first page:"
            echo
            echo '```'
            cat "$TMP/plan-pg-$large-first.txt"
            echo '```'
        fi
    fi
    if [[ " $PHASES " == *" claim "* ]]; then
        echo
        echo "**Claims under contention** ($CLAIM_SCANS queued scans that fail at once, drained by processes of $CLAIM_WORKERS workers each; every scan ran exactly once):"
        echo
        echo "| store | workers | claims/s | claim-to-outcome p50 | p99 | drain time |"
        echo "| --- | ---: | ---: | ---: | ---: | ---: |"
        echo "| SQLite, 1 process | $CLAIM_WORKERS | **${R[claim.sqlite.rate]}** | ${R[claim.sqlite.p50]} ms | ${R[claim.sqlite.p99]} ms | ${R[claim.sqlite.span]} s |"
        echo "| PostgreSQL, 1 replica | $CLAIM_WORKERS | **${R[claim.pg1.rate]}** | ${R[claim.pg1.p50]} ms | ${R[claim.pg1.p99]} ms | ${R[claim.pg1.span]} s |"
        echo "| PostgreSQL, 3 replicas | $((3 * CLAIM_WORKERS)) | **${R[claim.pg3.rate]}** | ${R[claim.pg3.p50]} ms | ${R[claim.pg3.p99]} ms | ${R[claim.pg3.span]} s |"
    fi
    if [[ " $PHASES " == *" filters "* ]]; then
        sizes=($LIST_SIZES)
        small=${sizes[0]}
        large=${sizes[-1]}
        echo
        echo "**Other list filters, inside the store** (no HTTP; the statement the service runs, limit 50 + 1; PostgreSQL: median \`Execution Time\` of 11 \`EXPLAIN ANALYZE\`; SQLite: mean of 50 runs in the sqlite3 shell, less as many \`SELECT 1\`):"
        echo
        echo "| filter | PostgreSQL at $small | at $large | ratio | plan at $large (rows removed by filter) | SQLite at $small | at $large | ratio | plan |"
        echo "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | --- |"
        for f in $FILTER_NAMES; do
            echo "| $(filter_desc "$f") | ${R[filter.pg.$small.$f]} ms | ${R[filter.pg.$large.$f]} ms | $(calc "${R[filter.pg.$large.$f]} / ${R[filter.pg.$small.$f]}" 0)× | ${R[filter.pgplan.$large.$f]} (${R[filter.pgremoved.$large.$f]:-0}) | ${R[filter.sqlite.$small.$f]} ms | ${R[filter.sqlite.$large.$f]} ms | $(calc "${R[filter.sqlite.$large.$f]} / (${R[filter.sqlite.$small.$f]} > 0.001 ? ${R[filter.sqlite.$small.$f]} : 0.001)" 0)× | ${R[filter.sqliteplan.$large.$f]} |"
        done
    fi
    if [[ " $PHASES " == *" trigger "* ]]; then
        echo
        echo "**Inserts into \`scans\` with and without the counting trigger** (\`pgbench -n -j 2 -T $TRIGGER_DURATION\`, the service's single-row INSERT, one transaction each):"
        echo
        echo "| trigger \`scans_count_changes\` | 1 client | 8 clients |"
        echo "| --- | ---: | ---: |"
        echo "| enabled (as shipped) | ${R[trigger.on.1.tps]}/s (${R[trigger.on.1.lat]} ms) | ${R[trigger.on.8.tps]}/s (${R[trigger.on.8.lat]} ms) |"
        echo "| disabled | ${R[trigger.off.1.tps]}/s (${R[trigger.off.1.lat]} ms) | ${R[trigger.off.8.tps]}/s (${R[trigger.off.8.lat]} ms) |"
    fi
})

printf '%s\n' "$summary"
if [[ -n "${BENCH_OUT:-}" ]]; then
    printf '%s\n' "$summary" >"$BENCH_OUT"
    log "summary written to $BENCH_OUT"
fi
if [[ "$verdict" == FAIL && "${BENCH_FAIL_ON_TARGET:-0}" == 1 ]]; then
    exit 3
fi
