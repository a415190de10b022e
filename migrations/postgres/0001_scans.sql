-- Scans: one row per submitted scan. The row is the truth about a scan's state; a replica that
-- runs a scan records itself as `owner` and holds a lease it renews while the scan runs.
CREATE TABLE scans (
    seq                 BIGSERIAL PRIMARY KEY,
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
    timeout_seconds     BIGINT  NOT NULL,
    status              TEXT    NOT NULL,
    failure_reason      TEXT,
    errors_json         TEXT    NOT NULL DEFAULT '[]',
    resolved_commit     TEXT,
    resolved_branch     TEXT,
    summary_json        TEXT,
    artifacts_json      TEXT,
    submitted_at        DOUBLE PRECISION NOT NULL,
    started_at          DOUBLE PRECISION,
    finished_at         DOUBLE PRECISION,
    attempts            INTEGER NOT NULL DEFAULT 0,
    upload_status       TEXT    NOT NULL DEFAULT 'pending',
    upload_permission_id TEXT,
    verification_proof_json TEXT,
    remote_artifacts_json   TEXT,
    owner               TEXT,
    lease_expires_at    DOUBLE PRECISION,
    cancel_requested    BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE INDEX scans_status_seq ON scans (status, seq);
CREATE INDEX scans_status_started ON scans (status, started_at);
CREATE INDEX scans_running_lease ON scans (lease_expires_at) WHERE status = 'RUNNING';
CREATE INDEX scans_workspace_seq ON scans (workspace_id, seq);
CREATE INDEX scans_component_seq ON scans (component_id, seq);
CREATE INDEX scans_assessment_seq ON scans (assessment_id, seq);
CREATE INDEX scans_profile_seq ON scans (profile, seq);
CREATE INDEX scans_finished ON scans (finished_at) WHERE finished_at IS NOT NULL;

-- The stored event log of each scan, so a WebSocket on any replica can replay and follow it.
CREATE TABLE scan_events (
    test_id TEXT   NOT NULL REFERENCES scans (test_id) ON DELETE CASCADE,
    seq     BIGINT NOT NULL,
    json    TEXT   NOT NULL,
    PRIMARY KEY (test_id, seq)
);

-- Counts by status and by upload status, kept by a trigger so that reading them does not cost
-- a scan of the table however many scans are stored.
CREATE TABLE scan_counts (
    kind  TEXT   NOT NULL,
    value TEXT   NOT NULL,
    n     BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (kind, value)
);

CREATE FUNCTION scan_counts_track() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND OLD.status IS DISTINCT FROM NEW.status) THEN
        UPDATE scan_counts SET n = n - 1 WHERE kind = 'status' AND value = OLD.status;
    END IF;
    IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND OLD.status IS DISTINCT FROM NEW.status) THEN
        INSERT INTO scan_counts (kind, value, n) VALUES ('status', NEW.status, 1)
        ON CONFLICT (kind, value) DO UPDATE SET n = scan_counts.n + 1;
    END IF;
    IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND OLD.upload_status IS DISTINCT FROM NEW.upload_status) THEN
        UPDATE scan_counts SET n = n - 1 WHERE kind = 'upload' AND value = OLD.upload_status;
    END IF;
    IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND OLD.upload_status IS DISTINCT FROM NEW.upload_status) THEN
        INSERT INTO scan_counts (kind, value, n) VALUES ('upload', NEW.upload_status, 1)
        ON CONFLICT (kind, value) DO UPDATE SET n = scan_counts.n + 1;
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql SET search_path FROM CURRENT;

CREATE TRIGGER scans_count_changes
    AFTER INSERT OR DELETE OR UPDATE OF status, upload_status ON scans
    FOR EACH ROW EXECUTE FUNCTION scan_counts_track();
