-- Lists are ordered newest first by (submitted_at, seq), and the time filters bound the same key,
-- so every filter reads an index range that starts at the page: each single-column filter, and
-- workspace with status or component together, cost the same at any store size.
-- Claims take the oldest queued scan by the same key.
DROP INDEX scans_status_seq;
DROP INDEX scans_workspace_seq;
DROP INDEX scans_component_seq;
DROP INDEX scans_assessment_seq;
DROP INDEX scans_profile_seq;
CREATE INDEX scans_submitted ON scans (submitted_at, seq);
CREATE INDEX scans_status_submitted ON scans (status, submitted_at, seq);
CREATE INDEX scans_workspace_submitted ON scans (workspace_id, submitted_at, seq);
CREATE INDEX scans_component_submitted ON scans (component_id, submitted_at, seq);
CREATE INDEX scans_assessment_submitted ON scans (assessment_id, submitted_at, seq);
CREATE INDEX scans_profile_submitted ON scans (profile, submitted_at, seq);
CREATE INDEX scans_workspace_status_submitted ON scans (workspace_id, status, submitted_at, seq);
CREATE INDEX scans_workspace_component_submitted ON scans (workspace_id, component_id, submitted_at, seq);
