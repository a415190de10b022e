-- Credentials in a git_url stay in the memory of the replica that accepted the scan. Such a scan
-- is pinned to that replica: other replicas leave it alone while the replica is alive (its row in
-- `replicas` is renewed by its reconcile loop), and claim it (to fail it with a clear message)
-- only once the replica has stopped renewing.
ALTER TABLE scans ADD COLUMN pinned_to TEXT;

CREATE TABLE replicas (
    owner       TEXT PRIMARY KEY,
    alive_until DOUBLE PRECISION NOT NULL
);
