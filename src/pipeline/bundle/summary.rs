//! The bundle's records of a finished run: `reports/summary.json` (findings, policy, scanners),
//! `scan.json` (what was asked, what ran, when) and the attestation's predicate, written at the
//! end of the bundle phase together with the signed attestation.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::SystemTime;

use serde_json::{json, Value};

use super::{artifacts, attestation};
use crate::pipeline::finding::SeverityCounts;
use crate::pipeline::profile::{PolicyVerdict, Profile};
use crate::pipeline::scan::{now_secs, ScanSpec};
use crate::pipeline::source::prepare::Provenance;

/// What the records of one run say.
pub(crate) struct RunRecord<'a> {
    pub spec: &'a ScanSpec,
    /// The profile that ran (a `manifest_path` may have changed it).
    pub profile: &'a Profile,
    pub manifest_digest: &'a str,
    /// The `source` object of the prepared source.
    pub source: &'a Value,
    pub provenance: &'a Provenance,
    pub totals: &'a SeverityCounts,
    pub by_scanner: &'a BTreeMap<String, SeverityCounts>,
    /// `findings.suppressed`: the total and the count of each suppression kind.
    pub suppressed: Value,
    pub policy: &'a PolicyVerdict,
    /// The `scanners` entries.
    pub scanners: &'a [Value],
    pub warnings: &'a [String],
    pub started_at: f64,
}

impl RunRecord<'_> {
    /// `summary.json`.
    pub fn summary(&self) -> Value {
        json!({
            "test_id": self.spec.test_id,
            "profile": self.profile.name,
            "manifest_digest": self.manifest_digest,
            "commit": self.source.get("resolved_commit"),
            "branch": self.source.get("resolved_branch"),
            "provenance": self.provenance,
            "findings": {
                "total": self.totals,
                "by_scanner": self.by_scanner,
                "suppressed": self.suppressed,
            },
            "policy": self.policy,
            "scanners": self.scanners,
            "unsupported_manifest_tools": self.profile.unsupported_manifest_tools,
            "strict": self.spec.strict,
            "warnings": self.warnings,
        })
    }

    /// The fields `scan.json` and the predicate share: whom the scan is for, what it saw, and
    /// the service that ran it; `more` adds to them.
    fn with_subject(&self, more: Value) -> Value {
        let spec = self.spec;
        let mut doc = json!({
            "test_id": spec.test_id,
            "workspace_id": spec.workspace_id,
            "component_id": spec.component_id,
            "assessment_id": spec.assessment_id,
            "source": self.source,
            "provenance": self.provenance,
            "manifest_digest": self.manifest_digest,
            "service": { "name": "certus-assurance", "version": env!("CARGO_PKG_VERSION"), "revision": crate::BUILD_REVISION },
        });
        if let (Some(doc), Value::Object(more)) = (doc.as_object_mut(), more) {
            doc.extend(more);
        }
        doc
    }

    /// `scan.json`.
    pub fn scan(&self) -> Value {
        let spec = self.spec;
        self.with_subject(json!({
            "requested_by": spec.requested_by,
            "profile": self.profile,
            "manifest_path": spec.manifest_path,
            "submitted_at": spec.submitted_at,
            "started_at": self.started_at,
            "finished_at": now_secs(),
            "scanners": self.scanners,
            "unsupported_manifest_tools": self.profile.unsupported_manifest_tools,
            "strict": spec.strict,
            "warnings": self.warnings,
        }))
    }

    /// The attestation's predicate.
    pub fn predicate(&self) -> Value {
        self.with_subject(json!({
            "profile": self.profile.name,
            "policy": { "passed": self.policy.passed, "violations": self.policy.violations },
            "findings": self.totals,
            "finished_at": humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        }))
    }
}

/// Writes `summary.json`, `scan.json` and the attestation (signed with `key` when set), makes
/// the sealed bundle durable, and lists the bundle's files, `stream.jsonl` included (the job
/// engine completes it after the terminal event). Blocking.
///
/// `stream.jsonl` is not flushed: it is the replay of the stream, not part of the attested
/// bundle, and a replay that lost its last lines to a power loss is completed from the store
/// (the terminal event is rebuilt from the stored outcome).
pub(crate) fn write(
    dir: &Path,
    summary: &Value,
    scan: &Value,
    predicate: Value,
    key: Option<&attestation::AttestationKey>,
) -> anyhow::Result<Vec<String>> {
    artifacts::write_json(dir, artifacts::SUMMARY_JSON, summary)?;
    artifacts::write_json(dir, artifacts::SCAN_JSON, scan)?;
    attestation::write(dir, predicate, key)?;
    let mut files = artifacts::list_files(dir)?;
    files.retain(|f| f != artifacts::STREAM_JSONL);
    artifacts::make_durable(dir, &files)?;
    files.push(artifacts::STREAM_JSONL.to_string());
    files.sort();
    Ok(files)
}
