#!/usr/bin/env bash
# The scale model's measurements (docs/scaling.md): what one PostgreSQL server takes from 1, 2, 4
# and 8 replica processes of the release binary sharing it. For each replica count, in a database
# of its own per phase (created here, dropped on exit):
#
#   submit  accepted submissions per second (CERTUS_ASSURANCE_MAX_WORKERS=0: stored QUEUED, never
#           run), wrk spread over the replicas by benches/wrk/submit-replicas.lua;
#   claim   claims per second: BENCH_CLAIM_SCANS scans inserted QUEUED with SQL, each with a
#           profile the service does not know, so a claimed scan fails at once (claim, event,
#           outcome, no clone), drained by the replicas with BENCH_WORKERS workers each;
#   idle    the replicas with idle workers: the claim polls (one per idle worker per second) and
#           the reconcile passes (CERTUS_ASSURANCE_RECONCILE_INTERVAL_SECONDS);
#   held    every worker holds a scan whose clone stalls (a local TCP server that never answers):
#           lease renewals only (CERTUS_ASSURANCE_LEASE_SECONDS=BENCH_LEASE_SECONDS, renewed every
#           third of it);
#   streams the same, plus one WebSocket stream per held scan on every replica: a stream on a
#           replica that does not run its scan polls the stored event log (every 250 ms).
#
# Each phase reads, for its database only, the deltas of pg_stat_database (transactions,
# active_time), of pg_stat_user_tables (updates of `scans`, index reads of `scan_events`), the CPU
# time of the database's server processes (/proc/<pid>/stat of the backends in pg_stat_activity)
# and of the replica processes. The per-operation costs (transactions, database CPU, service CPU
# per submission, claim, renewal or stream poll) are the figures that survive a noisy machine.
#
#   scripts/bench-scale.sh                          # 1 2 4 8 replicas; summary to stdout
#   BENCH_OUT=/tmp/scale.md scripts/bench-scale.sh  # ... and as markdown in a file
#
# Knobs (environment):
#   BENCH_PG_URL         an administrator's URL of the server (default
#                        postgres://postgres@127.0.0.1:5432/test); databases certus_scale_* are
#                        created beside it and dropped on exit
#   BENCH_REPLICAS       replica counts (default "1 2 4 8")
#   BENCH_PHASES         any of "submit claim steady" (steady = idle, held, streams; default all)
#   BENCH_WORKERS        CERTUS_ASSURANCE_MAX_WORKERS per replica in claim and steady (default 2)
#   BENCH_DURATION       seconds of each measured window (default 10)
#   BENCH_SUBMIT_CONNS   wrk connections per replica (default 4)
#   BENCH_CLAIM_SCANS    prefilled scans per claim run (default 2000)
#   BENCH_LEASE_SECONDS  lease of the steady phases (default 3: a renewal per held scan per second)
#   BENCH_PORT_BASE      first of 10 loopback ports (default 18600)
#   BENCH_SKIP_BUILD     1: use the binary already in $CARGO_TARGET_DIR/release
#   BENCH_OUT            markdown summary file (default: none)
#
# All traffic is on loopback; every wait is bounded; services, helpers, temporary files and the
# databases are removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

PG_URL=${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432/test}
REPLICAS=${BENCH_REPLICAS:-1 2 4 8}
PHASES=${BENCH_PHASES:-submit claim steady}
WORKERS=${BENCH_WORKERS:-2}
DURATION=${BENCH_DURATION:-10}
SUBMIT_CONNS=${BENCH_SUBMIT_CONNS:-4}
CLAIM_SCANS=${BENCH_CLAIM_SCANS:-2000}
LEASE=${BENCH_LEASE_SECONDS:-3}
PORT_BASE=${BENCH_PORT_BASE:-18600}
STALL_PORT=$((PORT_BASE + 9))
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/certus-assurance/bench-target}"
BIN="$CARGO_TARGET_DIR/release/certus-assurance"
TICK=$(getconf CLK_TCK)

log() { printf '[bench-scale %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
calc() { awk "BEGIN { printf \"%.${2:-2}f\", $1 }"; }

TMP=""
declare -a SERVICE_PIDS=() HELPER_PIDS=() DATABASES=()

stop_pids() {
    local pid
    for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "$@"; do
        for _ in $(seq 1 75); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}
stop_services() {
    stop_pids "${SERVICE_PIDS[@]}"
    SERVICE_PIDS=()
}
stop_helpers() {
    stop_pids "${HELPER_PIDS[@]}"
    HELPER_PIDS=()
}
cleanup() {
    local rc=$? db
    stop_services
    stop_helpers
    for db in "${DATABASES[@]}"; do
        psql "$PG_URL" -qtA -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 ||
            log "could not drop database $db; drop it by hand"
    done
    [[ -n "$TMP" && -d "$TMP" ]] && rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------------
# Tools, binary, ports

if ! command -v wrk >/dev/null 2>&1; then
    log "installing wrk from Debian"
    DEBIAN_FRONTEND=noninteractive apt-get install -y wrk >/dev/null 2>&1 ||
        { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y wrk >/dev/null; }
fi
for tool in wrk psql curl awk ss python3; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is required"
done
psql "$PG_URL" -qtA -c 'SELECT 1' >/dev/null 2>&1 || die "PostgreSQL does not answer at $PG_URL (set BENCH_PG_URL)"
if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
    log "building the release binary (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
    timeout 3000 cargo build --release --locked --bin certus-assurance >&2 || die "release build failed"
fi
[[ -x "$BIN" ]] || die "no binary at $BIN"
for i in $(seq 0 9); do
    [[ -z "$(ss -Htln "sport = :$((PORT_BASE + i))")" ]] || die "port $((PORT_BASE + i)) is in use; set BENCH_PORT_BASE"
done
TMP=$(mktemp -d /tmp/certus-bench-scale.XXXXXX)

# ---------------------------------------------------------------------------------------------
# Databases and services

DB=""
CONNECTIONS=0
new_db() { # new_db KEY: creates a database (dropped on exit), sets DB to its name
    DB="certus_scale_$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')_$1"
    psql "$PG_URL" -qtA -v ON_ERROR_STOP=1 -c "CREATE DATABASE $DB" >/dev/null
    DATABASES+=("$DB")
}
db_url() { # db_url NAME -> the URL of database NAME on the server of PG_URL
    local base=${PG_URL%%\?*} query=""
    [[ "$PG_URL" == *\?* ]] && query="?${PG_URL#*\?}"
    echo "${base%/*}/$1$query"
}
q() { psql "$(db_url "$DB")" -qtA -v ON_ERROR_STOP=1 -c "$1"; }

# start_replicas N WORKERS [VAR=VALUE...]: N services on PORT_BASE.. sharing database DB.
start_replicas() {
    local n=$1 workers=$2 i pid
    shift 2
    for i in $(seq 0 $((n - 1))); do
        mkdir -p "$TMP/$DB-$i"
        (
            export CERTUS_ASSURANCE_DATA_DIR="$TMP/$DB-$i"
            export CERTUS_ASSURANCE_DATABASE_URL
            CERTUS_ASSURANCE_DATABASE_URL=$(db_url "$DB")
            export CERTUS_ASSURANCE_MAX_WORKERS="$workers"
            export CERTUS_ASSURANCE_MAX_QUEUE=10000000
            export CERTUS_ASSURANCE_REPLICA_ID="r$i"
            export CERTUS_ASSURANCE_LOG_LEVEL=warn
            export CERTUS_ASSURANCE_LOG_FORMAT=json
            export CERTUS_ASSURANCE_LISTEN_ADDR="127.0.0.1:$((PORT_BASE + i))"
            for kv in "$@"; do export "${kv?}"; done
            exec "$BIN" serve
        ) >>"$TMP/$DB-$i.log" 2>&1 &
        pid=$!
        SERVICE_PIDS+=("$pid")
    done
    for i in $(seq 0 $((n - 1))); do
        for _ in $(seq 1 300); do
            curl -fsS --max-time 2 "http://127.0.0.1:$((PORT_BASE + i))/health" >/dev/null 2>&1 && continue 2
            kill -0 "${SERVICE_PIDS[$i]}" 2>/dev/null || { tail -n 20 "$TMP/$DB-$i.log" >&2; die "replica $i exited at start-up"; }
            sleep 0.2
        done
        die "replica $i did not answer /health in 60s"
    done
}

cpu_ticks() { # cpu_ticks PID... -> utime + stime of the processes still alive, in ticks
    local pid total=0 f
    for pid in "$@"; do
        f=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        f=${f##*) }
        total=$((total + $(awk '{ print $12 + $13 }' <<<"$f")))
    done
    echo "$total"
}

# snapshot FILE: the counters of database DB and the CPU of its backends and of the services.
snapshot() {
    local stats pids
    stats=$(q "SELECT d.xact_commit + d.xact_rollback, round(d.active_time::numeric, 1),
                      coalesce((SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'scans'), 0),
                      coalesce((SELECT coalesce(idx_scan, 0) + coalesce(seq_scan, 0)
                                FROM pg_stat_user_tables WHERE relname = 'scan_events'), 0)
               FROM pg_stat_database d WHERE d.datname = current_database()")
    pids=$(psql "$PG_URL" -qtA -c "SELECT pid FROM pg_stat_activity WHERE datname = '$DB' AND pid <> pg_backend_pid()")
    # The backends' CPU, per backend, so one that appears during a window counts from 0.
    : >"$1.pids"
    local pid
    for pid in $pids; do echo "$pid $(cpu_ticks "$pid")" >>"$1.pids"; done
    echo "$stats|$(cpu_ticks "${SERVICE_PIDS[@]}")|$(date +%s.%N)" >"$1"
    CONNECTIONS=$(wc -l <"$1.pids")
}
# delta A B -> "transactions active_ms scan_updates event_reads db_cpu_s svc_cpu_s seconds"
delta() {
    local a b x0 at0 u0 e0 s0 t0 x1 at1 u1 e1 s1 t1 db_ticks=0 pid ticks before
    IFS='|' read -r x0 at0 u0 e0 s0 t0 <"$1"
    IFS='|' read -r x1 at1 u1 e1 s1 t1 <"$2"
    while read -r pid ticks; do
        before=$(awk -v p="$pid" '$1 == p { print $2 }' "$1.pids")
        db_ticks=$((db_ticks + ticks - ${before:-0}))
    done <"$2.pids"
    echo "$((x1 - x0)) $(calc "$at1 - $at0" 1) $((u1 - u0)) $((e1 - e0)) $(calc "$db_ticks / $TICK" 2) $(calc "($s1 - $s0) / $TICK" 2) $(calc "$t1 - $t0" 2)"
}

declare -A R
pressure() { awk -F'avg10=' '/^some/ { split($2, a, " "); print a[1] }' /proc/pressure/cpu 2>/dev/null || echo "?"; }

# ---------------------------------------------------------------------------------------------
# Phases

phase_submit() { # phase_submit N
    local n=$1 targets="" i out
    new_db "submit_$n"
    start_replicas "$n" 0
    for i in $(seq 0 $((n - 1))); do targets+="${targets:+,}127.0.0.1:$((PORT_BASE + i))"; done
    export BENCH_TARGETS=$targets
    local url="http://127.0.0.1:$PORT_BASE/v1/security-scans"
    timeout 60 wrk -t"$n" -c$((SUBMIT_CONNS * n)) -d2s -s benches/wrk/submit-replicas.lua "$url" >/dev/null 2>&1 || true
    out="$TMP/submit-$n.txt"
    snapshot "$TMP/s0"
    timeout $((DURATION + 60)) wrk -t"$n" -c$((SUBMIT_CONNS * n)) -d"${DURATION}s" --latency \
        -s benches/wrk/submit-replicas.lua "$url" >"$out" 2>&1 || { cat "$out" >&2; die "wrk failed"; }
    snapshot "$TMP/s1"
    R[conn.submit.$n]=$CONNECTIONS
    unset BENCH_TARGETS
    R[psi.submit.$n]=$(pressure)
    stop_services
    local accepted other dur d
    accepted=$(grep -o '\baccepted=[0-9]*' "$out" | cut -d= -f2)
    other=$(grep -o '\bother=[0-9]*' "$out" | cut -d= -f2)
    dur=$(grep -o '\bduration_us=[0-9]*' "$out" | cut -d= -f2)
    ((other == 0)) || die "submit with $n replicas: $other answers other than 202"
    read -r -a d <<<"$(delta "$TMP/s0" "$TMP/s1")"
    R[submit.$n]="$(calc "$accepted / ($dur / 1000000)" 0) $(calc "$(grep -o '\bp99_us=[0-9]*' "$out" | cut -d= -f2) / 1000" 1) $(calc "${d[0]} / $accepted" 2) $(calc "1000 * ${d[4]} / $accepted" 3) $(calc "1000 * ${d[5]} / $accepted" 3)"
    log "submit, $n replicas: ${R[submit.$n]} (accepted/s, p99 ms, transactions, db cpu ms, service cpu ms per submission)"
}

phase_claim() { # phase_claim N
    local n=$1 now_s t0 left d
    new_db "claim_$n"
    start_replicas 1 0 # migrations
    stop_services
    now_s=$(date +%s)
    q "INSERT INTO scans (test_id, workspace_id, component_id, assessment_id, source_type, git_url,
                          branch, profile, manifest_digest, timeout_seconds, status, submitted_at,
                          upload_status)
       SELECT 'test_' || lpad(to_hex(g), 12, '0'), 'ws-claim', 'c', 'a', 'git',
              'https://git.example.com/org/repo.git', 'main', 'fail-fast', 'sha256:x', 600,
              'QUEUED', $now_s + g * 0.000001, 'pending'
       FROM generate_series(1, $CLAIM_SCANS) AS g" >/dev/null
    q "VACUUM ANALYZE scans" >/dev/null
    snapshot "$TMP/c0"
    t0=$(date +%s)
    start_replicas "$n" "$WORKERS"
    while :; do
        left=$(q "SELECT count(*) FROM scans WHERE status IN ('QUEUED', 'RUNNING')")
        ((left == 0)) && break
        (($(date +%s) - t0 < 600)) || die "claims with $n replicas: $left scans left after 600s"
        sleep 0.5
    done
    snapshot "$TMP/c1"
    R[conn.claim.$n]=$CONNECTIONS
    R[psi.claim.$n]=$(pressure)
    stop_services
    local span once
    span=$(q "SELECT max(finished_at) - min(started_at) FROM scans")
    once=$(q "SELECT count(*) FROM scans WHERE attempts = 1 AND failure_reason = 'source_invalid'")
    ((once == CLAIM_SCANS)) || die "claims with $n replicas: $once of $CLAIM_SCANS scans ran exactly once"
    read -r -a d <<<"$(delta "$TMP/c0" "$TMP/c1")"
    R[claim.$n]="$(calc "$CLAIM_SCANS / $span" 0) $(calc "${d[0]} / $CLAIM_SCANS" 2) $(calc "1000 * ${d[4]} / $CLAIM_SCANS" 3) $(calc "1000 * ${d[5]} / $CLAIM_SCANS" 3)"
    log "claim, $n replicas x $WORKERS workers: ${R[claim.$n]} (claims/s, transactions, db cpu ms, service cpu ms per claim)"
}

# A TCP server on STALL_PORT that accepts git clones and never answers them.
start_stall_server() {
    python3 -c '
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(256); held = []
end = time.time() + 1800
s.settimeout(1)
while time.time() < end:
    try: held.append(s.accept()[0])
    except socket.timeout: pass
' "$STALL_PORT" &
    HELPER_PIDS+=("$!")
}

# Opens a WebSocket stream for each "port test_id" line of FILE and holds them (reading and
# discarding, answering pings) for SECONDS; writes FILE.ready once all are open.
start_streams() { # start_streams FILE SECONDS
    python3 -c '
import base64, os, select, socket, sys, time
targets = [l.split() for l in open(sys.argv[1]) if l.strip()]
socks = []
for port, tid in targets:
    s = socket.create_connection(("127.0.0.1", int(port)), timeout=60)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET /v1/security-scans/{tid}/stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
               f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk: sys.exit(f"stream {tid} on {port}: closed during the handshake")
        head += chunk
    if b" 101 " not in head.split(b"\r\n")[0]: sys.exit(f"stream {tid} on {port}: {head[:80]!r}")
    socks.append(s)
open(sys.argv[1] + ".ready", "w").close()
end = time.time() + float(sys.argv[2])
while time.time() < end:
    ready, _, _ = select.select(socks, [], [], 1)
    for s in ready:
        data = s.recv(65536)
        # A ping frame (0x89) from the server: answer with a masked pong carrying its payload.
        if len(data) >= 2 and data[0] == 0x89 and data[1] < 126:
            payload = data[2:2 + data[1]]
            s.sendall(bytes([0x8A, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
' "$1" "$2" &
    HELPER_PIDS+=("$!")
}

phase_steady() { # phase_steady N
    local n=$1 held=$((n * WORKERS)) i t0 running d
    new_db "steady_$n"
    start_stall_server
    start_replicas "$n" "$WORKERS" CERTUS_ASSURANCE_LEASE_SECONDS="$LEASE" \
        CERTUS_ASSURANCE_SHUTDOWN_GRACE_SECONDS=1 CERTUS_ASSURANCE_ALLOW_PRIVATE_NETWORKS=true \
        CERTUS_ASSURANCE_CLONE_TIMEOUT_SECONDS=1800 CERTUS_ASSURANCE_CLONE_STALL_TIMEOUT_SECONDS=1800
    sleep 3
    snapshot "$TMP/i0"
    sleep "$DURATION"
    snapshot "$TMP/i1"
    read -r -a d <<<"$(delta "$TMP/i0" "$TMP/i1")"
    R[idle.$n]="$(calc "${d[0]} / ${d[6]} / $n" 2) $(calc "1000 * ${d[4]} / ${d[6]} / $n" 2) $(calc "1000 * ${d[5]} / ${d[6]} / $n" 2)"
    log "idle, $n replicas: ${R[idle.$n]} (transactions/s, db cpu ms/s, service cpu ms/s per replica)"

    : >"$TMP/streams-$n"
    for i in $(seq 0 $((held - 1))); do
        local id
        id=$(curl -fsS --max-time 10 -H 'Content-Type: application/json' \
            -d "{\"workspace_id\":\"bench\",\"component_id\":\"c\",\"assessment_id\":\"a\",\"git_url\":\"git://127.0.0.1:$STALL_PORT/r.git\",\"branch\":\"main\",\"profile\":\"light\"}" \
            "http://127.0.0.1:$((PORT_BASE + i % n))/v1/security-scans" | grep -o '"test_id":"[^"]*"' | cut -d'"' -f4)
        [[ -n "$id" ]] || die "steady: a submission was not accepted"
        local r
        for r in $(seq 0 $((n - 1))); do echo "$((PORT_BASE + r)) $id" >>"$TMP/streams-$n"; done
    done
    t0=$(date +%s)
    while :; do
        running=$(q "SELECT count(*) FROM scans WHERE status = 'RUNNING'")
        ((running == held)) && break
        (($(date +%s) - t0 < 60)) || die "steady: $running of $held scans running after 60s"
        sleep 0.5
    done
    sleep 2
    snapshot "$TMP/h0"
    sleep "$DURATION"
    snapshot "$TMP/h1"
    read -r -a d <<<"$(delta "$TMP/h0" "$TMP/h1")"
    R[held.$n]="$(calc "${d[2]} / ${d[6]}" 1) $(calc "${d[0]} / ${d[6]}" 1) $(calc "1000 * ${d[4]} / ${d[6]}" 2)"
    R[held.raw.$n]="${d[*]}"
    log "held, $n replicas, $held scans: ${R[held.$n]} (renewals/s, transactions/s, db cpu ms/s)"

    start_streams "$TMP/streams-$n" $((DURATION + 30))
    t0=$(date +%s)
    until [[ -e "$TMP/streams-$n.ready" ]]; do
        (($(date +%s) - t0 < 180)) || die "steady: the streams did not open in 180s"
        kill -0 "${HELPER_PIDS[-1]}" 2>/dev/null || die "steady: the stream client stopped"
        sleep 0.2
    done
    sleep 2
    snapshot "$TMP/w0"
    sleep "$DURATION"
    snapshot "$TMP/w1"
    R[conn.steady.$n]=$CONNECTIONS
    R[psi.steady.$n]=$(pressure)
    read -r -a d <<<"$(delta "$TMP/w0" "$TMP/w1")"
    local stored=$((held * (n - 1)))
    R[streams.$n]="$stored $(calc "${d[3]} / ${d[6]}" 1) $(calc "${d[2]} / ${d[6]}" 1) $(calc "${d[0]} / ${d[6]}" 1) $(calc "1000 * ${d[4]} / ${d[6]}" 2)"
    R[streams.raw.$n]="${d[*]}"
    log "streams, $n replicas, $((held * n)) streams ($stored on the stored feed): ${R[streams.$n]} (stored streams, event reads/s, renewals/s, transactions/s, db cpu ms/s)"
    stop_services
    stop_helpers
}

# ---------------------------------------------------------------------------------------------

HEAD=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
START="$(date -u +%Y-%m-%dT%H:%M:%SZ); load average $(cut -d' ' -f1-3 /proc/loadavg)"
for n in $REPLICAS; do
    for phase in $PHASES; do
        case $phase in
            submit) phase_submit "$n" ;;
            claim) phase_claim "$n" ;;
            steady) phase_steady "$n" ;;
            *) die "unknown phase $phase" ;;
        esac
    done
done

rate_table() { # rate_table PHASE LABEL_SUFFIX HEADER: one row per replica count from R[PHASE.n]
    local phase=$1 n
    echo "$3"
    awk -F'|' '{ s = "|"; for (i = 2; i < NF; i++) s = s " ---: |"; print s }' <<<"$3"
    for n in $REPLICAS; do
        echo "| $n$2 | ${R[$phase.$n]// / | } | ${R[conn.$phase.$n]} | ${R[psi.$phase.$n]} |"
    done
    echo
}

summary() {
    echo "- Revision \`$HEAD\`, binary $(readlink -f "$BIN"); $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)); started $START, ended with load average $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- $(psql "$PG_URL" -qtA -c 'SELECT version()' | cut -d, -f1) on the same machine (shared_buffers $(psql "$PG_URL" -qtA -c 'SHOW shared_buffers'), synchronous_commit $(psql "$PG_URL" -qtA -c 'SHOW synchronous_commit'), max_connections $(psql "$PG_URL" -qtA -c 'SHOW max_connections'))"
    echo "- Workers per replica $WORKERS; windows of ${DURATION}s; lease ${LEASE}s in the steady phases; CPU pressure is /proc/pressure/cpu avg10 at the end of a phase"
    echo
    local n
    if [[ " $PHASES " == *" submit "* ]]; then
        rate_table submit "" "| replicas | accepted submissions/s | p99 ms | transactions per submission | database CPU ms per submission | service CPU ms per submission | connections | CPU pressure % |"
    fi
    if [[ " $PHASES " == *" claim "* ]]; then
        rate_table claim " × $WORKERS" "| replicas × workers | claims/s | transactions per claim | database CPU ms per claim | service CPU ms per claim | connections | CPU pressure % |"
    fi
    if [[ " $PHASES " == *" steady "* ]]; then
        echo "| replicas | idle: transactions/s per replica | idle: database CPU ms/s per replica | idle: service CPU ms/s per replica | held scans | renewals/s | transactions/s | database CPU ms/s | + streams (on the stored feed) | stored-feed reads/s | transactions/s | database CPU ms/s | connections | CPU pressure % |"
        echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        for n in $REPLICAS; do
            read -r -a i <<<"${R[idle.$n]}"
            read -r -a h <<<"${R[held.$n]}"
            read -r -a s <<<"${R[streams.$n]}"
            echo "| $n | ${i[0]} | ${i[1]} | ${i[2]} | $((n * WORKERS)) | ${h[0]} | ${h[1]} | ${h[2]} | $((n * n * WORKERS)) (${s[0]}) | ${s[1]} | ${s[3]} | ${s[4]} | ${R[conn.steady.$n]} | ${R[psi.steady.$n]} |"
        done
        echo
        echo "Raw deltas (transactions, active ms, scans updates, scan_events reads, database CPU s, service CPU s, seconds):"
        echo
        for n in $REPLICAS; do
            echo "- $n replicas: held ${R[held.raw.$n]}; streams ${R[streams.raw.$n]}"
        done
    fi
}
summary | tee "${BENCH_OUT:-/dev/null}"
