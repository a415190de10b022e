-- The per-workspace cap on active scans counts a workspace's QUEUED and RUNNING rows: two index
-- range lookups, whatever the number of finished scans.
CREATE INDEX scans_workspace_status ON scans (workspace_id, status);
