//! The upload workflow: Trust's permission, then the S3 raw and golden buckets, and the key that
//! signs attestations and upload requests (read by `App::build`, not here).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;

use super::{positive, seconds, Secret};

/// Smallest part S3 accepts in a multipart upload (every part but the last).
pub const S3_MIN_PART_BYTES: u64 = 5 * 1024 * 1024;
/// Largest object a single PutObject or CopyObject may write.
pub const S3_MAX_SINGLE_OBJECT_BYTES: u64 = 5 * 1024 * 1024 * 1024;

#[derive(Debug, Clone, Args)]
pub struct UploadConfig {
    /// Enable the upload workflow (`POST .../upload-request`): Trust permission, then S3.
    #[arg(long = "enable-s3-upload", default_value_t = false, value_name = "BOOL", action = clap::ArgAction::Set)]
    pub enabled: bool,

    /// Base URL of the Certus Trust service (required when uploads are enabled).
    #[arg(long, value_name = "URL")]
    pub trust_base_url: Option<String>,

    /// Bearer token sent to the Trust service.
    #[arg(long, value_name = "TOKEN", hide_env_values = true)]
    pub trust_token: Option<Secret>,

    /// Total time limit of one request to the Trust service, in seconds (less than the request
    /// time limit, since upload-request waits for Trust's answer).
    #[arg(long = "trust-timeout-seconds", default_value = "10", value_parser = seconds, value_name = "SECONDS")]
    pub trust_timeout: Duration,

    /// S3 endpoint (e.g. MinIO or LocalStack) [default: AWS for the region]; path-style addressing.
    #[arg(long, value_name = "URL")]
    pub s3_endpoint_url: Option<String>,

    /// S3 region.
    #[arg(long, default_value = "us-east-1", value_name = "REGION")]
    pub s3_region: String,

    /// S3 access key id [default: the standard AWS credential chain].
    #[arg(long, value_name = "ID", hide_env_values = true)]
    pub s3_access_key_id: Option<String>,

    /// S3 secret access key (with S3_ACCESS_KEY_ID).
    #[arg(long, value_name = "KEY", hide_env_values = true)]
    pub s3_secret_access_key: Option<Secret>,

    /// Bucket that receives each permitted file first.
    #[arg(
        long = "datalake-raw-bucket",
        default_value = "raw",
        value_name = "BUCKET"
    )]
    pub raw_bucket: String,

    /// Bucket that files are copied to once every file is in the raw bucket.
    #[arg(
        long = "datalake-golden-bucket",
        default_value = "golden",
        value_name = "BUCKET"
    )]
    pub golden_bucket: String,

    /// Key prefix in the raw bucket: `<prefix>/<test_id>/incoming/<path>`.
    #[arg(
        long = "datalake-raw-prefix",
        default_value = "security-scans",
        value_name = "PREFIX"
    )]
    pub raw_prefix: String,

    /// Key prefix in the golden bucket: `<prefix>/<test_id>/golden/<path>`.
    #[arg(
        long = "datalake-golden-prefix",
        default_value = "security-scans",
        value_name = "PREFIX"
    )]
    pub golden_prefix: String,

    /// Files larger than this go up in parts of this size (multipart upload); at least 5 MiB.
    #[arg(long = "s3-multipart-threshold-bytes", default_value_t = 16 * 1024 * 1024, value_name = "BYTES")]
    pub multipart_threshold: u64,

    /// Time limit of one attempt of one S3 request, in seconds.
    #[arg(long = "s3-timeout-seconds", default_value = "60", value_parser = seconds, value_name = "SECONDS")]
    pub s3_timeout: Duration,

    /// Attempts per S3 request (transient errors are retried with capped exponential backoff).
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub s3_max_attempts: u32,

    /// ed25519 private key (PKCS#8 PEM or DER, or a 32-byte seed as raw bytes, hex or base64)
    /// that signs each bundle's attestation (a DSSE envelope) and the inner signature of upload
    /// requests [default: unsigned attestation, `basic` uploads only].
    #[arg(long, value_name = "FILE")]
    pub signing_key_file: Option<PathBuf>,
}

impl UploadConfig {
    /// Checks the values, naming the offending variable in every error, and normalises them:
    /// empty values count as unset, prefixes lose their surrounding `/`, the endpoint its
    /// trailing one.
    pub(super) fn check(&mut self) -> anyhow::Result<()> {
        self.trust_base_url = match self.trust_base_url.as_deref().filter(|u| !u.is_empty()) {
            None => None,
            Some(raw) => Some(parse_service_url("TRUST_BASE_URL", raw)?.to_string()),
        };
        if self.enabled && self.trust_base_url.is_none() {
            bail!(
                "CERTUS_ASSURANCE_TRUST_BASE_URL is required when CERTUS_ASSURANCE_ENABLE_S3_UPLOAD=true \
                 (nothing is uploaded without Trust's permission)"
            );
        }
        self.trust_token = self.trust_token.take().filter(|t| !t.expose().is_empty());
        positive("TRUST_TIMEOUT_SECONDS", self.trust_timeout.as_secs())?;
        self.s3_endpoint_url = match self.s3_endpoint_url.as_deref().filter(|u| !u.is_empty()) {
            None => None,
            Some(raw) => Some(
                parse_service_url("S3_ENDPOINT_URL", raw)?
                    .as_str()
                    .trim_end_matches('/')
                    .to_string(),
            ),
        };
        if self.s3_region.is_empty()
            || !self
                .s3_region
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            bail!(
                "CERTUS_ASSURANCE_S3_REGION must be a region name such as us-east-1 (got `{}`)",
                self.s3_region
            );
        }
        self.s3_access_key_id = self.s3_access_key_id.take().filter(|v| !v.is_empty());
        self.s3_secret_access_key = self
            .s3_secret_access_key
            .take()
            .filter(|v| !v.expose().is_empty());
        match (&self.s3_access_key_id, &self.s3_secret_access_key) {
            (Some(_), Some(_)) | (None, None) => {}
            (Some(_), None) => bail!(
                "CERTUS_ASSURANCE_S3_SECRET_ACCESS_KEY must be set together with CERTUS_ASSURANCE_S3_ACCESS_KEY_ID"
            ),
            (None, Some(_)) => bail!(
                "CERTUS_ASSURANCE_S3_ACCESS_KEY_ID must be set together with CERTUS_ASSURANCE_S3_SECRET_ACCESS_KEY"
            ),
        }
        check_bucket("DATALAKE_RAW_BUCKET", &self.raw_bucket)?;
        check_bucket("DATALAKE_GOLDEN_BUCKET", &self.golden_bucket)?;
        self.raw_prefix = check_prefix("DATALAKE_RAW_PREFIX", &self.raw_prefix)?;
        self.golden_prefix = check_prefix("DATALAKE_GOLDEN_PREFIX", &self.golden_prefix)?;
        if self.multipart_threshold < S3_MIN_PART_BYTES
            || self.multipart_threshold > S3_MAX_SINGLE_OBJECT_BYTES
        {
            bail!(
                "CERTUS_ASSURANCE_S3_MULTIPART_THRESHOLD_BYTES must be from {S3_MIN_PART_BYTES} (5 MiB, \
                 the smallest S3 part) to {S3_MAX_SINGLE_OBJECT_BYTES} (5 GiB)"
            );
        }
        positive("S3_TIMEOUT_SECONDS", self.s3_timeout.as_secs())?;
        if !(1..=10).contains(&self.s3_max_attempts) {
            bail!("CERTUS_ASSURANCE_S3_MAX_ATTEMPTS must be from 1 to 10");
        }
        if let Some(key) = &self.signing_key_file {
            if !key.is_file() {
                bail!(
                    "CERTUS_ASSURANCE_SIGNING_KEY_FILE: {} is not a readable file",
                    key.display()
                );
            }
        }
        Ok(())
    }

    /// The Trust service's base URL (set whenever uploads are enabled).
    pub fn trust_url(&self) -> Option<url::Url> {
        self.trust_base_url
            .as_deref()
            .and_then(|u| url::Url::parse(u).ok())
    }

    /// Static S3 credentials; `None` uses the standard AWS credential chain.
    pub fn s3_credentials(&self) -> Option<(String, Secret)> {
        Some((
            self.s3_access_key_id.clone()?,
            self.s3_secret_access_key.clone()?,
        ))
    }
}

/// An `http` or `https` URL with a host and no credentials (tokens go in their own variable).
fn parse_service_url(var: &str, raw: &str) -> anyhow::Result<url::Url> {
    let url = url::Url::parse(raw).with_context(|| {
        format!("CERTUS_ASSURANCE_{var} must be an http(s) URL such as https://trust.example.com")
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        bail!(
            "CERTUS_ASSURANCE_{var} must be an http(s) URL with a host (got scheme `{}`)",
            url.scheme()
        );
    }
    if !url.username().is_empty() || url.password().is_some() {
        bail!("CERTUS_ASSURANCE_{var} must not carry credentials; use the token or key variables");
    }
    if url.query().is_some() || url.fragment().is_some() {
        bail!(
            "CERTUS_ASSURANCE_{var} must not have a query string or fragment (`?...`, `#...`): \
             they can carry credentials (tokens, signatures) that would be logged; use the token \
             or key variables"
        );
    }
    Ok(url)
}

/// S3 bucket naming rules: 3-63 characters of lower-case letters, digits, `.` and `-`.
pub(super) fn check_bucket(var: &str, bucket: &str) -> anyhow::Result<()> {
    let valid = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && bucket.as_bytes()[0].is_ascii_alphanumeric()
        && bucket.as_bytes()[bucket.len() - 1].is_ascii_alphanumeric();
    if !valid {
        bail!(
            "CERTUS_ASSURANCE_{var} must be a valid S3 bucket name (3-63 lower-case letters, digits, \
             `.` or `-`), got `{bucket}`"
        );
    }
    Ok(())
}

/// Key prefix: segments of `[A-Za-z0-9._-]` separated by `/`; surrounding `/` removed.
pub(super) fn check_prefix(var: &str, prefix: &str) -> anyhow::Result<String> {
    let trimmed = prefix.trim_matches('/');
    let valid = trimmed.len() <= 256
        && (trimmed.is_empty()
            || trimmed.split('/').all(|seg| {
                !seg.is_empty()
                    && seg != "."
                    && seg != ".."
                    && seg
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            }));
    if !valid {
        bail!(
            "CERTUS_ASSURANCE_{var} must be `/`-separated segments of letters, digits, `.`, `_` or `-` \
             (got `{prefix}`)"
        );
    }
    Ok(trimmed.to_string())
}
