-- Counts by status and upload status, spread over 64 rows per value: each transaction updates the
-- rows of its own connection's shard, so state changes of different replicas (and of different
-- connections of one replica) no longer wait for each other's row locks until commit. Reading the
-- counts sums at most 64 rows per value.
ALTER TABLE scan_counts ADD COLUMN shard SMALLINT NOT NULL DEFAULT 0;
ALTER TABLE scan_counts DROP CONSTRAINT scan_counts_pkey;
ALTER TABLE scan_counts ADD PRIMARY KEY (kind, value, shard);

CREATE OR REPLACE FUNCTION scan_counts_track() RETURNS trigger AS $$
DECLARE
    s SMALLINT := (pg_backend_pid() % 64)::SMALLINT;
BEGIN
    IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND OLD.status IS DISTINCT FROM NEW.status) THEN
        INSERT INTO scan_counts (kind, value, shard, n) VALUES ('status', OLD.status, s, -1)
        ON CONFLICT (kind, value, shard) DO UPDATE SET n = scan_counts.n - 1;
    END IF;
    IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND OLD.status IS DISTINCT FROM NEW.status) THEN
        INSERT INTO scan_counts (kind, value, shard, n) VALUES ('status', NEW.status, s, 1)
        ON CONFLICT (kind, value, shard) DO UPDATE SET n = scan_counts.n + 1;
    END IF;
    IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND OLD.upload_status IS DISTINCT FROM NEW.upload_status) THEN
        INSERT INTO scan_counts (kind, value, shard, n) VALUES ('upload', OLD.upload_status, s, -1)
        ON CONFLICT (kind, value, shard) DO UPDATE SET n = scan_counts.n - 1;
    END IF;
    IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND OLD.upload_status IS DISTINCT FROM NEW.upload_status) THEN
        INSERT INTO scan_counts (kind, value, shard, n) VALUES ('upload', NEW.upload_status, s, 1)
        ON CONFLICT (kind, value, shard) DO UPDATE SET n = scan_counts.n + 1;
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql SET search_path FROM CURRENT;
