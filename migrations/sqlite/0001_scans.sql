-- Scans: one row per submitted scan. The row is the truth about a scan's state.
CREATE TABLE scans (
    seq                 INTEGER PRIMARY KEY AUTOINCREMENT,
    test_id             TEXT    NOT NULL UNIQUE,
    workspace_id        TEXT    NOT NULL,
    component_id        TEXT    NOT NULL,
    assessment_id       TEXT    NOT NULL,
    source_type         TEXT    NOT NULL,
    git_url             TEXT,
    branch              TEXT,
    requested_commit    TEXT,
    directory_path      TEXT,
    archive_path        TEXT,
    requested_by        TEXT,
    profile             TEXT    NOT NULL,
    manifest_digest     TEXT    NOT NULL,
    timeout_seconds     INTEGER NOT NULL,
    status              TEXT    NOT NULL,
    failure_reason      TEXT,
    errors_json         TEXT    NOT NULL DEFAULT '[]',
    resolved_commit     TEXT,
    resolved_branch     TEXT,
    summary_json        TEXT,
    artifacts_json      TEXT,
    submitted_at        REAL    NOT NULL,
    started_at          REAL,
    finished_at         REAL,
    attempts            INTEGER NOT NULL DEFAULT 0,
    upload_status       TEXT    NOT NULL DEFAULT 'pending',
    upload_permission_id TEXT,
    verification_proof_json TEXT,
    remote_artifacts_json   TEXT
);

-- The queue: the oldest QUEUED scan, and the oldest RUNNING one, are found by index.
CREATE INDEX scans_status_seq ON scans (status, seq);
CREATE INDEX scans_status_started ON scans (status, started_at);
CREATE INDEX scans_workspace_seq ON scans (workspace_id, seq);
