-- Clone credentials of a git_url, sealed with the replicas' shared credential key (AES-256-GCM
-- envelope, bound to the scan's test id; the key id is part of the value), so that any replica
-- can clone such a scan: it is no longer pinned to the replica that accepted it. NULL without
-- credentials, without a key configured (the scan is then pinned as before), and once the scan
-- has ended.
ALTER TABLE scans ADD COLUMN sealed_credentials TEXT;
