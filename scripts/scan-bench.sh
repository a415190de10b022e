#!/usr/bin/env bash
# A lean scan: service time and completions per second of tiny scans (a two-file git repository
# over file://, profile `light`), of this tree's release binary beside the binary of an earlier
# revision, alternated in one run so that both see the same machine noise.
#
#   scripts/scan-bench.sh                         # this tree against main
#   SCAN_BENCH_AGAINST=b2b9484 scripts/scan-bench.sh
#   SCAN_BENCH_PROFILE=1 scripts/scan-bench.sh    # and the per-phase profile (strace, callgrind)
#
# For each round and each binary (A = the earlier revision, B = this tree; order A B, then B A):
#   1. one worker: the service starts on a fresh data directory, SCAN_BENCH_SERIAL scans are
#      submitted in one batch and run one after the other. Service time = finished_at -
#      started_at of each scan, from the store (claim to outcome, every phase included).
#   2. two workers: SCAN_BENCH_PARALLEL scans in one batch; completions/s = scans / (last
#      finished_at - first started_at).
# The CPU time the service used (utime + stime from /proc/<pid>/stat) is divided by the scans.
# With SCAN_BENCH_PROFILE=1, each binary also runs SCAN_BENCH_PROFILE_SCANS scans (one worker)
# under `strace -f -c` (system calls per scan and the time spent in them) and under
# `valgrind --tool=callgrind` (instructions per scan and per phase, from inclusive costs).
#
# Knobs: SCAN_BENCH_AGAINST (revision, default main), SCAN_BENCH_BEFORE_BIN / SCAN_BENCH_AFTER_BIN
# (use these binaries, no build), SCAN_BENCH_ROUNDS (3), SCAN_BENCH_SERIAL (100),
# SCAN_BENCH_PARALLEL (300), SCAN_BENCH_PROFILE_SCANS (30), SCAN_BENCH_OUT (markdown file).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
AGAINST=${SCAN_BENCH_AGAINST:-main}
ROUNDS=${SCAN_BENCH_ROUNDS:-3}
SERIAL=${SCAN_BENCH_SERIAL:-100}
PARALLEL=${SCAN_BENCH_PARALLEL:-300}
PROFILE=${SCAN_BENCH_PROFILE:-0}
PROFILE_SCANS=${SCAN_BENCH_PROFILE_SCANS:-30}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/certus-assurance/bench-target}"
export CARGO_TERM_COLOR=never

log() { printf '[scan-bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
for tool in curl jq sqlite3 git python3; do
    command -v "$tool" >/dev/null || die "$tool is needed (apt-get install -y $tool)"
done

TMP=$(mktemp -d /tmp/scan-bench.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]:-}"; do [[ -n "$pid" ]] && kill "$pid" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT

# --- binaries -------------------------------------------------------------------------------
if [[ -n "${SCAN_BENCH_BEFORE_BIN:-}" ]]; then
    BEFORE=$SCAN_BENCH_BEFORE_BIN
else
    log "building $AGAINST (release) from a copy of its tree"
    mkdir -p "$TMP/before-src"
    git -C "$ROOT" archive "$AGAINST" | tar -x -C "$TMP/before-src"
    (cd "$TMP/before-src" &&
        CERTUS_ASSURANCE_BUILD_REVISION=$(git -C "$ROOT" rev-parse --short=12 "$AGAINST") \
            nice cargo build --release --locked --bin certus-assurance >&2)
    cp "$CARGO_TARGET_DIR/release/certus-assurance" "$TMP/before"
    BEFORE=$TMP/before
fi
if [[ -n "${SCAN_BENCH_AFTER_BIN:-}" ]]; then
    AFTER=$SCAN_BENCH_AFTER_BIN
else
    log "building this tree (release)"
    nice cargo build --release --locked --bin certus-assurance >&2
    cp "$CARGO_TARGET_DIR/release/certus-assurance" "$TMP/after"
    AFTER=$TMP/after
fi
BEFORE_REV=$(git -C "$ROOT" rev-parse --short "$AGAINST" 2>/dev/null || echo "$AGAINST")
AFTER_REV="$(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- src || echo '+changes')"

# --- the repository: two files, one commit ---------------------------------------------------
REPO=$TMP/repo
mkdir -p "$REPO"
git -C "$REPO" init -q -b main
printf '# demo\n\nA two-file repository.\n' >"$REPO/README.md"
printf 'import os\n\n\ndef main():\n    print(os.environ.get("HOME"))\n' >"$REPO/app.py"
git -C "$REPO" add -A
git -C "$REPO" -c user.name=bench -c user.email=bench@example.com commit -q -m init

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start NAME BIN WORKERS [PREFIX...]: starts the service on a fresh data dir, sets PORT, PID, DATA.
start() {
    local name=$1 bin=$2 workers=$3
    shift 3
    DATA=$TMP/data-$name
    rm -rf "$DATA"
    mkdir -p "$DATA"
    PORT=$(free_port)
    CERTUS_ASSURANCE_LISTEN_ADDR=127.0.0.1:$PORT \
        CERTUS_ASSURANCE_DATA_DIR=$DATA \
        CERTUS_ASSURANCE_MAX_WORKERS=$workers \
        CERTUS_ASSURANCE_MAX_QUEUE=100000 \
        CERTUS_ASSURANCE_BATCH_MAX_ITEMS=10000 \
        CERTUS_ASSURANCE_ALLOW_LOCAL_SOURCES=true \
        CERTUS_ASSURANCE_LOG_LEVEL=warn \
        "$@" "$bin" serve >"$TMP/$name.log" 2>&1 &
    PID=$!
    PIDS+=("$PID")
    for _ in $(seq 1 "${START_TRIES:-600}"); do
        curl -fs "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    cat "$TMP/$name.log" >&2
    die "$name did not start"
}

stop() {
    kill -INT "$PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
}

# The service's CPU seconds (utime + stime of every thread) from /proc.
cpu_seconds() {
    awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"
}

# submit N: one batch of N scans of the repository.
submit() {
    local n=$1
    jq -nc --arg url "file://$REPO" --argjson n "$n" \
        '{scans: [range($n) | {workspace_id: "bench", component_id: "c", assessment_id: "a",
          git_url: $url, branch: "main", profile: "light"}]}' >"$TMP/batch.json"
    curl -fsS -o "$TMP/batch-answer.json" -H 'content-type: application/json' \
        --data-binary @"$TMP/batch.json" "http://127.0.0.1:$PORT/v1/security-scans/batch" ||
        die "the batch was refused: $(cat "$TMP/batch-answer.json" 2>/dev/null)"
}

# wait_done N: until N scans are terminal.
wait_done() {
    local n=$1 done=0
    for _ in $(seq 1 6000); do
        done=$(curl -fs "http://127.0.0.1:$PORT/stats" |
            jq '.scans_by_status.succeeded + .scans_by_status.failed')
        ((done >= n)) && return 0
        sleep 0.05
    done
    die "only $done of $n scans finished"
}

# measure NAME BIN WORKERS N: one measured run; appends a JSON line to $TMP/runs.jsonl.
measure() {
    local name=$1 bin=$2 workers=$3 n=$4
    start "$name-w$workers" "$bin" "$workers"
    local cpu0 psi0
    cpu0=$(cpu_seconds "$PID")
    psi0=$(awk '/^some/ {split($5, a, "="); print a[2]}' /proc/pressure/cpu)
    local t0=$SECONDS
    submit "$n"
    wait_done "$n"
    local cpu1 psi1 elapsed=$((SECONDS - t0))
    cpu1=$(cpu_seconds "$PID")
    psi1=$(awk '/^some/ {split($5, a, "="); print a[2]}' /proc/pressure/cpu)
    curl -fs "http://127.0.0.1:$PORT/metrics" >"$TMP/metrics-$name-w$workers.txt"
    stop
    local db=$DATA/certus-assurance.db
    sqlite3 -json "$db" "SELECT status, started_at, finished_at FROM scans" >"$TMP/scans.json"
    python3 - "$name" "$workers" "$n" "$cpu0" "$cpu1" "$psi0" "$psi1" "$elapsed" \
        "$TMP/scans.json" "$TMP/metrics-$name-w$workers.txt" "$(cut -d' ' -f1 /proc/loadavg)" \
        >>"$TMP/runs.jsonl" <<'EOF'
import json, re, sys
name, workers, n, cpu0, cpu1, psi0, psi1, elapsed, scans, metrics, load = sys.argv[1:]
rows = json.load(open(scans))
ok = [r for r in rows if r["status"] == "SUCCEEDED"]
times = sorted((r["finished_at"] - r["started_at"]) * 1000 for r in rows)
span = max(r["finished_at"] for r in rows) - min(r["started_at"] for r in rows)
q = lambda p: times[min(len(times) - 1, int(p * len(times)))]
phases = {}
for line in open(metrics):
    m = re.match(r'certus_assurance_scan_phase_duration_seconds_(sum|count)\{phase="(\w+)"\} (\S+)', line)
    if m:
        phases.setdefault(m.group(2), {})[m.group(1)] = float(m.group(3))
    m = re.match(r'certus_assurance_scanner_duration_seconds_(sum|count)\{[^}]*scanner="(\w+)"[^}]*\} (\S+)', line)
    if m:
        d = phases.setdefault("scanner " + m.group(2), {})
        d[m.group(1)] = d.get(m.group(1), 0) + float(m.group(3))
mean = {k: v["sum"] / v["count"] * 1000 for k, v in phases.items() if v.get("count")}
print(json.dumps({
    "bin": name, "workers": int(workers), "scans": int(n), "succeeded": len(ok),
    "p50_ms": q(0.5), "p90_ms": q(0.9), "max_ms": times[-1],
    "per_s": len(rows) / span, "cpu_ms_per_scan": (float(cpu1) - float(cpu0)) * 1000 / int(n),
    "cpu_pressure": (int(psi1) - int(psi0)) / 1e6 / max(1, int(elapsed)),
    "load": float(load), "phases_ms": mean,
}))
EOF
    log "$name, $workers worker(s): $(tail -n1 "$TMP/runs.jsonl" | jq -c '{p50_ms, per_s, cpu_ms_per_scan, succeeded}')"
}

log "A = $BEFORE_REV ($BEFORE), B = $AFTER_REV ($AFTER)"
for round in $(seq 1 "$ROUNDS"); do
    if ((round % 2)); then order="A B"; else order="B A"; fi
    for which in $order; do
        bin=$BEFORE
        [[ $which == B ]] && bin=$AFTER
        measure "$which" "$bin" 1 "$SERIAL"
        measure "$which" "$bin" 2 "$PARALLEL"
    done
done

# --- profile ----------------------------------------------------------------------------------
if [[ "$PROFILE" == 1 ]]; then
    command -v strace >/dev/null || die "strace is needed for SCAN_BENCH_PROFILE=1"
    command -v valgrind >/dev/null || die "valgrind is needed for SCAN_BENCH_PROFILE=1"
    for which in A B; do
        bin=$BEFORE
        [[ $which == B ]] && bin=$AFTER
        # strace: the system calls of the scans only (attached after start-up, detached at the end).
        start "$which-strace" "$bin" 1
        strace -f -c -w -o "$TMP/strace-$which.txt" -p "$PID" 2>/dev/null &
        spid=$!
        sleep 1
        submit "$PROFILE_SCANS"
        wait_done "$PROFILE_SCANS"
        kill -INT "$spid"
        wait "$spid" 2>/dev/null || true
        stop
        mkdir -p "${SCAN_BENCH_KEEP:-$TMP}"
        cp "$TMP/strace-$which.txt" "${SCAN_BENCH_KEEP:-$TMP}/" 2>/dev/null || true
        [[ "${SCAN_BENCH_CALLGRIND:-1}" == 1 ]] || continue
        # callgrind: instructions between two dumps around the scans.
        START_TRIES=6000 start "$which-callgrind" "$bin" 1 valgrind --tool=callgrind \
            --callgrind-out-file="$TMP/callgrind-$which.%p" --dump-instr=no
        callgrind_control -z "$PID" >/dev/null
        submit "$PROFILE_SCANS"
        wait_done "$PROFILE_SCANS"
        callgrind_control -d "$PID" >/dev/null
        stop
        cg=$(ls -t "$TMP"/callgrind-"$which".*.1 2>/dev/null | head -n1 || true)
        [[ -n "$cg" ]] || cg=$(ls -S "$TMP"/callgrind-"$which".* | head -n1)
        callgrind_annotate --inclusive=yes --threshold=100 "$cg" >"$TMP/callgrind-$which.txt" 2>/dev/null || true
        mkdir -p "${SCAN_BENCH_KEEP:-$TMP}"
        cp "$TMP/callgrind-$which.txt" "${SCAN_BENCH_KEEP:-$TMP}/" 2>/dev/null || true
    done
fi

# --- report -----------------------------------------------------------------------------------
python3 - "$TMP/runs.jsonl" "$BEFORE_REV" "$AFTER_REV" "$PROFILE" "$PROFILE_SCANS" "$TMP" <<'EOF' | tee "${SCAN_BENCH_OUT:-/dev/null}"
import json, re, statistics, sys, os
runs_file, a_rev, b_rev, profile, pscans, tmp = sys.argv[1:]
runs = [json.loads(l) for l in open(runs_file)]
med = lambda xs: statistics.median(xs) if xs else float("nan")
def pick(b, w): return [r for r in runs if r["bin"] == b and r["workers"] == w]
print(f"A = `{a_rev}`, B = `{b_rev}`; {len(pick('A', 1))} alternated rounds; load average "
      f"{min(r['load'] for r in runs):.1f}-{max(r['load'] for r in runs):.1f}, CPU pressure "
      f"{min(r['cpu_pressure'] for r in runs):.0%}-{max(r['cpu_pressure'] for r in runs):.0%}\n")
print("| measure | A | B | B / A |\n|---|---|---|---|")
rows = [
    ("service time p50, 1 worker (ms)", 1, "p50_ms"),
    ("service time p90, 1 worker (ms)", 1, "p90_ms"),
    ("CPU per scan, 1 worker (ms)", 1, "cpu_ms_per_scan"),
    ("completions/s, 1 worker", 1, "per_s"),
    ("completions/s, 2 workers", 2, "per_s"),
    ("service time p50, 2 workers (ms)", 2, "p50_ms"),
    ("CPU per scan, 2 workers (ms)", 2, "cpu_ms_per_scan"),
]
for label, w, key in rows:
    a, b = med([r[key] for r in pick("A", w)]), med([r[key] for r in pick("B", w)])
    print(f"| {label} | {a:.2f} | {b:.2f} | {b / a:.2f} |")
print("\nEvery run (median of the rounds above):\n")
print("| binary | workers | scans (succeeded) | p50 / p90 / max ms | completions/s | CPU ms/scan | load | CPU pressure |")
print("|---|---|---|---|---|---|---|---|")
for r in runs:
    print(f"| {r['bin']} | {r['workers']} | {r['scans']} ({r['succeeded']}) | {r['p50_ms']:.1f} / {r['p90_ms']:.1f} / {r['max_ms']:.1f} "
          f"| {r['per_s']:.1f} | {r['cpu_ms_per_scan']:.2f} | {r['load']:.1f} | {r['cpu_pressure']:.0%} |")
print("\nMean phase and scanner times from `/metrics` (1 worker, median over rounds, ms):\n")
keys = sorted({k for r in runs for k in r["phases_ms"]})
print("| phase | A | B |\n|---|---|---|")
for k in keys:
    a = med([r["phases_ms"].get(k, 0) for r in pick("A", 1)])
    b = med([r["phases_ms"].get(k, 0) for r in pick("B", 1)])
    print(f"| {k} | {a:.2f} | {b:.2f} |")
if profile == "1":
    n = int(pscans)
    print(f"\nSystem calls per scan (`strace -f -c -w`, {n} scans, 1 worker; wall time in the call):\n")
    def strace(path):
        out = {}
        for line in open(path):
            f = line.split()
            if len(f) >= 5 and re.match(r"^[\d.]+$", f[0]) and f[-1] != "total":
                calls = int(f[3]); out[f[-1]] = (calls, float(f[1]))
        return out
    sa, sb = strace(f"{tmp}/strace-A.txt"), strace(f"{tmp}/strace-B.txt")
    top = sorted(set(sa) | set(sb), key=lambda s: -max(sa.get(s, (0, 0))[1], sb.get(s, (0, 0))[1]))[:14]
    print("| call | A calls/scan | A ms/scan | B calls/scan | B ms/scan |\n|---|---|---|---|---|")
    for s in top:
        ca, ta = sa.get(s, (0, 0)); cb, tb = sb.get(s, (0, 0))
        print(f"| {s} | {ca / n:.1f} | {ta * 1000 / n:.2f} | {cb / n:.1f} | {tb * 1000 / n:.2f} |")
    if not os.path.exists(f"{tmp}/callgrind-A.txt"):
        sys.exit(0)
    print(f"\nInstructions per scan (`valgrind --tool=callgrind`, {n} scans, 1 worker, inclusive):\n")
    def cg(path):
        out, total = {}, None
        for line in open(path):
            m = re.match(r"^\s*([\d,]+) \(\s*[\d.]+%\)\s+(.*)$", line)
            if m:
                v = int(m.group(1).replace(",", "")); fn = m.group(2)
                if "PROGRAM TOTALS" in fn: total = v
                else: out.setdefault(fn, v)
        return total, out
    probes = [
        ("whole process", None),
        ("clone (git2)", "checkout::clone_repository"),
        ("secrets scanner", "SecretsScanner as certus_assurance::pipeline::scanners::Scanner>::run"),
        ("sbom scanner", "SbomScanner as certus_assurance::pipeline::scanners::Scanner>::run"),
        ("vulnerabilities scanner", "VulnerabilityScanner as certus_assurance::pipeline::scanners::Scanner>::run"),
        ("findings merge", "bundle::findings::process"),
        ("summary, scan.json, attestation", "bundle::summary::write"),
        ("attestation", "bundle::attestation::write"),
        ("bundle JSON files", "bundle::artifacts::write_json"),
        ("stream.jsonl lines", "append_stream_line"),
        ("event serialisation", "events::event_json"),
        ("store: claim", "JobManager::claim"),
        ("store: finish", "JobManager::finish"),
        ("HTTP: batch submit", "submit_batch"),
    ]
    (ta, fa), (tb, fb) = cg(f"{tmp}/callgrind-A.txt"), cg(f"{tmp}/callgrind-B.txt")
    def find(fns, key):
        vals = [v for f, v in fns.items() if key in f]
        return max(vals) if vals else None
    print("| part | A Ir/scan | B Ir/scan | B / A |\n|---|---|---|---|")
    for label, key in probes:
        a = ta if key is None else find(fa, key)
        b = tb if key is None else find(fb, key)
        fmt = lambda v: f"{v / n / 1000:,.0f} K" if v else "-"
        ratio = f"{b / a:.2f}" if a and b else "-"
        print(f"| {label} | {fmt(a)} | {fmt(b)} | {ratio} |")
EOF
