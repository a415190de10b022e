-- Clone credentials of a git_url, sealed with the replicas' credential key (AES-256-GCM envelope,
-- bound to the scan's test id; the key id is part of the value). NULL without credentials,
-- without a key configured, and once the scan has ended.
ALTER TABLE scans ADD COLUMN sealed_credentials TEXT;
