-- Scans per status, kept by triggers in the transaction of each change: admission reads the
-- queue's length inside its own transaction in constant time, however many scans wait.
CREATE TABLE scan_status_counts (
    status TEXT    PRIMARY KEY,
    n      INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO scan_status_counts (status, n)
    VALUES ('QUEUED', 0), ('RUNNING', 0), ('SUCCEEDED', 0), ('FAILED', 0);
UPDATE scan_status_counts
    SET n = (SELECT count(*) FROM scans WHERE scans.status = scan_status_counts.status);

CREATE TRIGGER scan_status_counts_insert AFTER INSERT ON scans
BEGIN
    UPDATE scan_status_counts SET n = n + 1 WHERE status = NEW.status;
END;
CREATE TRIGGER scan_status_counts_delete AFTER DELETE ON scans
BEGIN
    UPDATE scan_status_counts SET n = n - 1 WHERE status = OLD.status;
END;
CREATE TRIGGER scan_status_counts_update AFTER UPDATE OF status ON scans
    WHEN OLD.status <> NEW.status
BEGIN
    UPDATE scan_status_counts SET n = n - 1 WHERE status = OLD.status;
    UPDATE scan_status_counts SET n = n + 1 WHERE status = NEW.status;
END
