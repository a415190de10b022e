-- Upload workflow state beyond the status: why the last attempt was denied or failed, its
-- progress, the tier asked for, and the in-flight marker with the replica that serves the upload
-- and its lease (renewed while the upload runs, so a dead replica's upload can be ended).
ALTER TABLE scans ADD COLUMN upload_reason TEXT;
ALTER TABLE scans ADD COLUMN upload_progress_json TEXT;
ALTER TABLE scans ADD COLUMN upload_tier TEXT;
ALTER TABLE scans ADD COLUMN upload_started_at DOUBLE PRECISION;
ALTER TABLE scans ADD COLUMN upload_owner TEXT;
ALTER TABLE scans ADD COLUMN upload_lease_expires_at DOUBLE PRECISION;

CREATE INDEX scans_upload_in_flight ON scans (upload_lease_expires_at) WHERE upload_started_at IS NOT NULL;
