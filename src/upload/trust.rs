//! The Certus Trust client: one call, `POST {TRUST_BASE_URL}/v1/verify-and-permit-upload`, with
//! typed request and answer, a connect and a total timeout, verified TLS, and an optional bearer
//! token. It sits behind [`TrustClient`] so the uploader does not depend on HTTP.
//!
//! Every way the call can go wrong is a [`TrustError`], and the uploader treats each of them as
//! "no permission" (fail closed): only a 2xx answer whose body parses, says `permitted: true` and
//! carries a usable `upload_permission_id` lets anything reach S3.

use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::config::Secret;

/// Largest Trust answer read; a longer body is an invalid answer.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;
/// Longest connect phase of a Trust request (within its total time limit).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One file that will be uploaded, declared to Trust.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactDeclaration {
    /// Path inside the bundle, `/`-separated.
    pub name: String,
    /// `sha256:<hex>`.
    pub hash: String,
    /// Size in bytes.
    pub size: u64,
}

/// The scanner's own signature over the declared digests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InnerSignature {
    pub signer: String,
    /// RFC 3339 UTC.
    pub timestamp: String,
    /// Base64 ed25519 signature of the canonical digest list, or `None` without a signing key.
    pub signature: Option<String>,
    /// `ed25519`, or `none` without a signing key.
    pub algorithm: String,
    /// Base64 of the 32-byte ed25519 public key that verifies `signature`.
    pub certificate: Option<String>,
}

/// Where the files will go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageDestinations {
    /// `s3://<raw bucket>/<raw prefix>/<test_id>/incoming/`
    pub raw_s3: String,
    pub oci_registry: Option<String>,
}

/// The body of `POST /v1/verify-and-permit-upload`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PermitRequest {
    pub scan_id: String,
    pub tier: String,
    pub inner_signature: InnerSignature,
    pub artifacts: Vec<ArtifactDeclaration>,
    /// Provenance: `git_url` (credentials stripped), `branch`, `commit` (resolved), plus the
    /// scan's identifiers.
    pub metadata: serde_json::Value,
    pub storage_destinations: StorageDestinations,
}

/// Trust's answer, as parsed. Unknown fields are ignored.
#[derive(Debug, Clone, Deserialize)]
struct PermitAnswer {
    permitted: bool,
    #[serde(default)]
    upload_permission_id: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    verification_proof: Option<serde_json::Value>,
    #[serde(default)]
    storage_config: Option<serde_json::Value>,
}

/// An explicit permit.
#[derive(Debug, Clone, PartialEq)]
pub struct Permit {
    pub upload_permission_id: String,
    pub reason: Option<String>,
    pub verification_proof: Option<serde_json::Value>,
    pub storage_config: Option<serde_json::Value>,
}

/// What Trust decided.
#[derive(Debug, Clone, PartialEq)]
pub enum TrustDecision {
    Permitted(Permit),
    Denied { reason: String },
}

/// Why there is no decision. Each maps to one `outcome` label of `trust_requests_total`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    #[error("the Trust service did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the Trust service could not be reached: {0}")]
    Unreachable(String),
    #[error("the Trust service answered HTTP {status}{}", detail_suffix(.detail))]
    Status { status: u16, detail: String },
    #[error("the Trust service's answer is not a valid permit or denial: {0}")]
    InvalidResponse(String),
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    }
}

impl TrustError {
    /// The `outcome` label value.
    pub fn outcome(&self) -> &'static str {
        match self {
            TrustError::Timeout(_) => "timeout",
            TrustError::Unreachable(_) => "unreachable",
            TrustError::Status { .. } => "error",
            TrustError::InvalidResponse(_) => "invalid_response",
        }
    }
}

/// Asks Trust for permission to upload. Implementations never retry on their own: one call is
/// one decision (or one error).
pub trait TrustClient: Send + Sync {
    fn verify_and_permit(
        &self,
        request: &PermitRequest,
    ) -> BoxFuture<'_, Result<TrustDecision, TrustError>>;
}

/// The HTTP implementation.
pub struct HttpTrustClient {
    client: reqwest::Client,
    endpoint: url::Url,
    token: Option<Secret>,
    timeout: Duration,
}

impl HttpTrustClient {
    /// A client for `base_url`; TLS certificates are verified against the system trust store,
    /// redirects are not followed (the bearer token must not travel elsewhere).
    pub fn new(
        base_url: &url::Url,
        token: Option<Secret>,
        timeout: Duration,
    ) -> anyhow::Result<HttpTrustClient> {
        let mut base = base_url.clone();
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let endpoint = base
            .join("v1/verify-and-permit-upload")
            .map_err(|e| anyhow::anyhow!("CERTUS_ASSURANCE_TRUST_BASE_URL: {e}"))?;
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT.min(timeout))
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("certus-assurance/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| anyhow::anyhow!("building the Trust HTTP client: {e}"))?;
        Ok(HttpTrustClient {
            client,
            endpoint,
            token,
            timeout,
        })
    }

    #[tracing::instrument(
        name = "trust",
        skip_all,
        fields(otel.name = "trust verify-and-permit-upload", upload.tier = %request.tier)
    )]
    async fn call(&self, request: &PermitRequest) -> Result<TrustDecision, TrustError> {
        let mut builder = self.client.post(self.endpoint.clone()).json(request);
        if let Some(token) = &self.token {
            builder = builder.bearer_auth(token.expose());
        }
        let mut response = builder.send().await.map_err(|e| self.send_error(&e))?;
        let status = response.status();
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                        return Err(TrustError::InvalidResponse(format!(
                            "the answer is larger than {MAX_ANSWER_BYTES} bytes"
                        )));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => return Err(self.send_error(&e)),
            }
        }
        if !status.is_success() {
            return Err(TrustError::Status {
                status: status.as_u16(),
                detail: short_detail(&body),
            });
        }
        parse_answer(&body)
    }

    fn send_error(&self, err: &reqwest::Error) -> TrustError {
        if err.is_timeout() {
            TrustError::Timeout(self.timeout)
        } else if err.is_connect() {
            TrustError::Unreachable(format!(
                "connecting to {} failed ({}); check CERTUS_ASSURANCE_TRUST_BASE_URL, that Trust is running, and that its TLS certificate is trusted by this host",
                origin(&self.endpoint),
                root_cause(err)
            ))
        } else {
            TrustError::Unreachable(format!(
                "the connection to {} failed before a full answer arrived ({})",
                origin(&self.endpoint),
                root_cause(err)
            ))
        }
    }
}

impl TrustClient for HttpTrustClient {
    fn verify_and_permit(
        &self,
        request: &PermitRequest,
    ) -> BoxFuture<'_, Result<TrustDecision, TrustError>> {
        let request = request.clone();
        Box::pin(async move {
            // The total limit also bounds a server that trickles its body.
            match tokio::time::timeout(self.timeout, self.call(&request)).await {
                Ok(result) => result,
                Err(_) => Err(TrustError::Timeout(self.timeout)),
            }
        })
    }
}

/// The innermost cause of an error (a refused connection, a certificate that does not verify),
/// clipped, for the recorded reason.
pub(crate) fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    clip(&cause.to_string(), 200)
}

/// `scheme://host:port` of a URL (never its path or query, which could carry secrets).
fn origin(url: &url::Url) -> String {
    url.origin().ascii_serialization()
}

/// The start of an error body, on one line, for the recorded reason.
fn short_detail(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let detail = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| {
            v.get("detail")
                .or_else(|| v.get("reason"))
                .or_else(|| v.get("message"))
                .and_then(|d| d.as_str().map(str::to_string))
        })
        .unwrap_or_else(|| text.to_string());
    clip(&detail, 200)
}

/// At most `max` characters of `s`, control characters replaced by spaces.
pub(crate) fn clip(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect();
    if s.chars().count() > max {
        out.push('…');
    }
    out.trim().to_string()
}

/// Whether a permission id can become an S3 metadata value and a stored identifier.
fn valid_permission_id(id: &str) -> bool {
    (1..=256).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
}

/// Parses a 2xx body into a decision; anything else is an invalid answer.
fn parse_answer(body: &[u8]) -> Result<TrustDecision, TrustError> {
    let answer: PermitAnswer = serde_json::from_slice(body).map_err(|e| {
        TrustError::InvalidResponse(format!("expected a JSON object with `permitted`: {e}"))
    })?;
    if !answer.permitted {
        let reason = answer
            .reason
            .as_deref()
            .map(|r| clip(r, 500))
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| "Trust gave no reason".to_string());
        return Ok(TrustDecision::Denied { reason });
    }
    let id = answer.upload_permission_id.unwrap_or_default();
    if !valid_permission_id(&id) {
        return Err(TrustError::InvalidResponse(
            "`permitted` is true but `upload_permission_id` is missing or not 1-256 printable ASCII characters".into(),
        ));
    }
    if answer
        .verification_proof
        .as_ref()
        .is_some_and(|p| !(p.is_object() || p.is_null()))
    {
        return Err(TrustError::InvalidResponse(
            "`verification_proof` must be an object".into(),
        ));
    }
    Ok(TrustDecision::Permitted(Permit {
        upload_permission_id: id,
        reason: answer.reason.map(|r| clip(&r, 500)),
        verification_proof: answer.verification_proof.filter(|p| !p.is_null()),
        storage_config: answer.storage_config,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_need_a_usable_permission_id() {
        let ok = parse_answer(br#"{"permitted": true, "upload_permission_id": "perm-1", "verification_proof": {"x": 1}}"#).unwrap();
        assert!(
            matches!(ok, TrustDecision::Permitted(p) if p.upload_permission_id == "perm-1" && p.verification_proof.is_some())
        );
        for body in [
            &br#"{"permitted": true}"#[..],
            br#"{"permitted": true, "upload_permission_id": ""}"#,
            br#"{"permitted": true, "upload_permission_id": "a b"}"#,
            br#"{"permitted": true, "upload_permission_id": "x", "verification_proof": 3}"#,
            br#"{"permitted": "yes", "upload_permission_id": "x"}"#,
            br#"<html>ok</html>"#,
            br#"[]"#,
        ] {
            let err = parse_answer(body).unwrap_err();
            assert_eq!(
                err.outcome(),
                "invalid_response",
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn denials_keep_a_bounded_reason() {
        let d = parse_answer(br#"{"permitted": false, "reason": "policy\nviolation"}"#).unwrap();
        assert_eq!(
            d,
            TrustDecision::Denied {
                reason: "policy violation".into()
            }
        );
        let d = parse_answer(br#"{"permitted": false}"#).unwrap();
        assert!(matches!(d, TrustDecision::Denied { .. }));
    }

    #[test]
    fn endpoint_keeps_the_base_path() {
        let c = HttpTrustClient::new(
            &"http://127.0.0.1:9/trust".parse().unwrap(),
            None,
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(
            c.endpoint.as_str(),
            "http://127.0.0.1:9/trust/v1/verify-and-permit-upload"
        );
    }
}
