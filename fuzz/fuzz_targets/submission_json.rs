//! The body of `POST /v1/security-scans` (and each item of a batch): any bytes give either a
//! submission whose fields satisfy the documented rules, or validation errors that each name a
//! field and say what is wrong. Never a panic.
#![no_main]

use std::sync::OnceLock;

use certus_assurance::api::scans::{validate_submission_json, SubmissionPolicy};
use certus_assurance::config::MAX_SCAN_TIMEOUT_SECONDS;
use certus_assurance::error::ApiError;
use certus_assurance::pipeline::source::SourcePolicy;
use libfuzzer_sys::fuzz_target;

fn policy() -> &'static SubmissionPolicy {
    static POLICY: OnceLock<SubmissionPolicy> = OnceLock::new();
    POLICY.get_or_init(|| {
        let tmp = std::env::temp_dir().canonicalize().expect("temp dir");
        SubmissionPolicy {
            source: SourcePolicy::STRICT,
            source_roots: vec![tmp.clone()],
            upload_dir: tmp.join("certus-fuzz-uploads"),
            default_timeout_seconds: 600,
        }
    })
}

fn identifier(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fuzz_target!(|data: &[u8]| {
    match validate_submission_json(data, policy()) {
        Ok(scan) => {
            assert!(identifier(&scan.workspace_id), "{:?}", scan.workspace_id);
            assert!(identifier(&scan.component_id), "{:?}", scan.component_id);
            assert!(identifier(&scan.assessment_id), "{:?}", scan.assessment_id);
            assert!(["git", "directory", "archive"].contains(&scan.source_type.as_str()));
            assert!((1..=MAX_SCAN_TIMEOUT_SECONDS).contains(&scan.timeout_seconds));
            assert!(
                scan.manifest_digest.starts_with("sha256:"),
                "{}",
                scan.manifest_digest
            );
            if scan.source_type == "git" {
                let shown = scan
                    .git_display_url
                    .as_deref()
                    .expect("git scans have a URL");
                assert!(scan.git_clone_url.is_some());
                if let Ok(url) = url::Url::parse(shown) {
                    assert!(url.password().is_none(), "{shown} shows a password");
                }
            } else {
                assert!(scan.git_clone_url.is_none() && scan.branch.is_none());
            }
            if let Some(commit) = &scan.commit {
                assert!(commit
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
            }
            if let Some(path) = &scan.manifest_path {
                assert!(!path.starts_with('/') && !path.split('/').any(|c| c == ".."));
            }
        }
        Err(ApiError::Validation(errors)) => {
            assert!(!errors.is_empty());
            for e in errors {
                assert_eq!(e.loc.first(), Some(&serde_json::json!("body")), "{e:?}");
                assert!(!e.msg.is_empty() && !e.kind.is_empty(), "{e:?}");
            }
        }
        Err(other) => {
            panic!("a submission failed with something other than a validation error: {other:?}")
        }
    }
});
