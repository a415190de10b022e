-- Indexes for list queries: each filter column paired with the keyset (seq), newest first.
CREATE INDEX scans_component_seq ON scans (component_id, seq);
CREATE INDEX scans_assessment_seq ON scans (assessment_id, seq);
CREATE INDEX scans_profile_seq ON scans (profile, seq);
-- Retention selects finished scans by their end time.
CREATE INDEX scans_finished ON scans (finished_at) WHERE finished_at IS NOT NULL;
