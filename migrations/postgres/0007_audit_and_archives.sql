-- The audit trail: one row per state-changing request (or batch item) and per retention
-- deletion. No secret is ever stored: the actor is a token name or a client address, never a
-- token, and no URL is kept. Listed newest first by (at, seq), like scans.
CREATE TABLE audit_events (
    seq            BIGSERIAL PRIMARY KEY,
    at             DOUBLE PRECISION NOT NULL,
    actor          TEXT    NOT NULL,
    actor_kind     TEXT    NOT NULL,
    workspace_id   TEXT,
    test_id        TEXT,
    archive_sha256 TEXT,
    action         TEXT    NOT NULL,
    outcome        TEXT    NOT NULL,
    status         INTEGER
);
CREATE INDEX audit_events_at ON audit_events (at, seq);
CREATE INDEX audit_events_workspace_at ON audit_events (workspace_id, at, seq);
CREATE INDEX audit_events_action_at ON audit_events (action, at, seq);

-- Uploaded archives and the workspaces that uploaded them: a scan may name an archive only if
-- its workspace owns it. The file (`uploads/<sha256>.<ext>`) is shared and removed when its last
-- owner row is pruned.
CREATE TABLE archive_owners (
    sha256       TEXT    NOT NULL,
    workspace_id TEXT    NOT NULL,
    ext          TEXT    NOT NULL,
    size_bytes   BIGINT  NOT NULL,
    uploaded_at  DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (sha256, workspace_id)
);
CREATE INDEX archive_owners_workspace ON archive_owners (workspace_id);
CREATE INDEX archive_owners_uploaded ON archive_owners (uploaded_at);
-- Retention keeps an archive while a retained scan of its workspace names it.
CREATE INDEX scans_archive_path ON scans (workspace_id, archive_path) WHERE archive_path IS NOT NULL;
