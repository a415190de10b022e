-- Upload workflow state beyond the status: why the last attempt was denied or failed, its
-- progress, the tier asked for, and the in-flight marker (set while an upload-request is being
-- served, so a second request for the same scan is refused instead of starting another upload).
ALTER TABLE scans ADD COLUMN upload_reason TEXT;
ALTER TABLE scans ADD COLUMN upload_progress_json TEXT;
ALTER TABLE scans ADD COLUMN upload_tier TEXT;
ALTER TABLE scans ADD COLUMN upload_started_at REAL;

CREATE INDEX scans_upload_in_flight ON scans (upload_started_at) WHERE upload_started_at IS NOT NULL;
