# Shared by the benchmark scripts (sourced, not run): a SQLite job store filled with SQL
# directly, much faster than through HTTP.
#
#   source scripts/bench-lib.sh
#   fill_sqlite DBFILE FROM TO     # after the service has created the schema in DBFILE

# One scan row per n in [FROM, TO]: finished scans (one in ten FAILED) of 100 workspaces,
# 1000 components, 50 assessments and 3 profiles, submitted every 0.5 s in seq order, each with a
# realistic summary and artifact list.
SUMMARY='{"findings":{"critical":0,"high":1,"medium":3,"low":0,"info":0,"total":4},"policy":{"passed":true,"thresholds":{"critical":0,"high":5,"medium":50,"low":null},"violations":[]},"scanners":{"secrets":{"critical":0,"high":1,"medium":3,"low":0,"info":0,"total":4}},"scanner_runs":[{"scanner":"secrets","outcome":"success","duration_seconds":0.42}]}'
ARTIFACTS='["scan.json","summary.json","reports/sast/secrets.sarif.json","logs/runner.log","stream.jsonl"]'
T0=$(($(date +%s) - 600000)) # scan n is submitted at T0 + n/2 s: all in the past

fill_sqlite() { # fill_sqlite DBFILE FROM TO
    local db=$1 from=$2 to=$3
    sqlite3 -batch -bail "$db" "
        BEGIN;
        WITH RECURSIVE g(n) AS (SELECT $from UNION ALL SELECT n + 1 FROM g WHERE n < $to)
        INSERT INTO scans (test_id, workspace_id, component_id, assessment_id, source_type, git_url,
            branch, profile, manifest_digest, timeout_seconds, status, failure_reason, errors_json,
            resolved_commit, resolved_branch, summary_json, artifacts_json, submitted_at, started_at,
            finished_at, attempts, upload_status)
        SELECT printf('test_%012x', n), printf('ws-%03d', n % 100), 'component-' || (n % 1000),
               'assessment-' || (n % 50), 'git',
               'https://git.example.com/org/repo-' || (n % 1000) || '.git', 'main',
               CASE n % 3 WHEN 0 THEN 'light' WHEN 1 THEN 'standard' ELSE 'polyglot' END,
               'sha256:' || printf('%064d', n % 3), 600,
               CASE WHEN n % 10 = 0 THEN 'FAILED' ELSE 'SUCCEEDED' END,
               CASE WHEN n % 10 = 0 THEN 'clone_failed' END,
               CASE WHEN n % 10 = 0
                    THEN '[\"could not clone https://git.example.com/org/repo.git: connection refused\"]'
                    ELSE '[]' END,
               printf('%040x', n * 2654435761), 'main',
               CASE WHEN n % 10 = 0 THEN NULL ELSE '$SUMMARY' END, '$ARTIFACTS',
               $T0 + n * 0.5, $T0 + n * 0.5 + 1, $T0 + n * 0.5 + 20, 1, 'pending'
        FROM g;
        COMMIT;" >/dev/null
}


# start_certus LOG PORT DATA_DIR DATABASE_URL BIN [WRAPPER...]: `BIN serve` on 127.0.0.1:PORT
# (under WRAPPER, e.g. taskset or valgrind) with a data dir, a store ("" = the default SQLite
# file in DATA_DIR), no workers (scans are stored QUEUED and never run) and a queue bound no
# benchmark reaches; waits up to 120 s for /health. Sets STARTED_PID.
start_certus() {
    local log=$1 port=$2 data=$3 store=$4 bin=$5
    shift 5
    mkdir -p "$data"
    (
        export CERTUS_ASSURANCE_DATA_DIR="$data"
        [[ -n "$store" ]] && export CERTUS_ASSURANCE_DATABASE_URL="$store"
        export CERTUS_ASSURANCE_MAX_WORKERS=0
        export CERTUS_ASSURANCE_MAX_QUEUE=10000000
        export CERTUS_ASSURANCE_LOG_LEVEL=warn
        export CERTUS_ASSURANCE_LOG_FORMAT=json
        export CERTUS_ASSURANCE_LISTEN_ADDR="127.0.0.1:$port"
        exec "$@" "$bin" serve
    ) >>"$log" 2>&1 &
    STARTED_PID=$!
    local _
    for _ in $(seq 1 600); do
        if ! kill -0 "$STARTED_PID" 2>/dev/null; then
            tail -n 20 "$log" >&2
            echo "the service ($bin) exited at start-up" >&2
            return 1
        fi
        curl -fsS --max-time 2 "http://127.0.0.1:$port/health" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    echo "the service ($bin) did not answer /health in 120 s" >&2
    return 1
}
