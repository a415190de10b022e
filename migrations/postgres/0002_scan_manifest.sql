-- The effective profile of a scan whose inline manifest defined or changed it (NULL for a
-- built-in preset), and the manifest file inside the source tree that a scan reads at run time.
ALTER TABLE scans ADD COLUMN manifest_json TEXT;
ALTER TABLE scans ADD COLUMN manifest_path TEXT;
