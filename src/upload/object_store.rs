//! The S3 client (aws-sdk-s3): the only module that imports the AWS SDK. It offers the few object
//! operations the uploader and the artifact store need, each timed and counted in `s3_requests_total{operation,outcome}`
//! and `s3_request_duration_seconds`, with SDK errors turned into one [`S3Error`] that says what
//! failed and what to check.
//!
//! Endpoint override with path-style addressing (MinIO, LocalStack, moto), region and static
//! credentials come from the configuration; without static credentials the standard AWS chain
//! (environment, profile, web identity, container and instance metadata) is used. HTTPS goes
//! through rustls with the ring provider and the system's trusted roots. Transient errors
//! (throttling, 5xx, connection failures, attempt timeouts) are retried by the SDK's standard
//! retry strategy: exponential backoff with jitter, capped delay, and a capped number of attempts.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, MetadataDirective};

use crate::config::UploadConfig;
use crate::metrics::Metrics;

/// First retry delay; doubled per attempt (with jitter) up to [`MAX_BACKOFF`].
const INITIAL_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A failed S3 operation (after the SDK's retries).
#[derive(Debug, Clone, thiserror::Error)]
#[error("S3 {operation} of {target} failed: {message}")]
pub struct S3Error {
    /// The `operation` label value.
    pub operation: &'static str,
    /// `s3://bucket/key` (or the bucket) the operation addressed.
    pub target: String,
    pub message: String,
    /// The request timed out (rather than failing).
    pub timeout: bool,
}

/// What HEAD tells about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub size: u64,
    /// User metadata (`x-amz-meta-*`), keys lower case.
    pub metadata: HashMap<String, String>,
}

/// An incomplete multipart upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingMultipart {
    pub key: String,
    pub upload_id: String,
}

/// A finished part of a multipart upload.
#[derive(Debug, Clone)]
pub struct UploadedPart {
    pub number: i32,
    pub etag: String,
    /// Base64 SHA-256 of the part, as S3 verified it.
    pub sha256_b64: String,
}

/// The S3 client with its metrics. Cheap to clone.
#[derive(Clone)]
pub struct ObjectStore {
    client: aws_sdk_s3::Client,
    endpoint: String,
    /// Time limit of one attempt (`S3_TIMEOUT_SECONDS`), also applied to each chunk of a body.
    attempt_timeout: Duration,
    metrics: Metrics,
}

impl ObjectStore {
    /// Builds the client from the configuration. No request is made here.
    pub async fn connect(config: &UploadConfig, metrics: Metrics) -> ObjectStore {
        let http_client = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(config.s3_region.clone()))
            .http_client(http_client)
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(config.s3_max_attempts)
                    .with_initial_backoff(INITIAL_BACKOFF)
                    .with_max_backoff(MAX_BACKOFF),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT.min(config.s3_timeout))
                    .operation_attempt_timeout(config.s3_timeout)
                    .build(),
            );
        if let Some((id, secret)) = config.s3_credentials() {
            loader = loader.credentials_provider(Credentials::new(
                id,
                secret.expose().to_string(),
                None,
                None,
                "certus-assurance-config",
            ));
        }
        if let Some(endpoint) = &config.s3_endpoint_url {
            loader = loader.endpoint_url(endpoint.clone());
        }
        let shared = loader.load().await;
        let s3_config = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(config.s3_endpoint_url.is_some())
            // Bodies read back are checked by their readers (stored sha256, the attestation);
            // some S3-compatible servers answer a multipart object's GET with a part checksum
            // the SDK would take for the whole object's.
            .response_checksum_validation(
                aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
            )
            .build();
        ObjectStore {
            client: aws_sdk_s3::Client::from_conf(s3_config),
            endpoint: config
                .s3_endpoint_url
                .clone()
                .unwrap_or_else(|| format!("AWS S3 in {}", config.s3_region)),
            attempt_timeout: config.s3_timeout,
            metrics,
        }
    }

    /// Times and counts one operation, and turns its SDK error into an [`S3Error`].
    async fn observe<T, E, R>(
        &self,
        operation: &'static str,
        target: String,
        call: impl Future<Output = Result<T, SdkError<E, R>>>,
    ) -> Result<T, S3Error>
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        let span = tracing::info_span!(
            "s3",
            otel.name = %format!("s3 {operation}"),
            otel.status_code = tracing::field::Empty,
            s3.operation = operation,
        );
        let start = Instant::now();
        let result = tracing::Instrument::instrument(call, span.clone()).await;
        if result.is_err() {
            span.record("otel.status_code", "error");
        }
        self.settle(operation, target, start, result)
    }

    /// Records the outcome of one operation that started at `start`.
    fn record(&self, operation: &'static str, outcome: &str, start: Instant) {
        self.metrics
            .uploads
            .s3_requests
            .with_label_values(&[operation, outcome])
            .inc();
        self.metrics
            .uploads
            .s3_request_duration
            .with_label_values(&[operation, outcome])
            .observe(start.elapsed().as_secs_f64());
    }

    fn settle<T, E, R>(
        &self,
        operation: &'static str,
        target: String,
        start: Instant,
        result: Result<T, SdkError<E, R>>,
    ) -> Result<T, S3Error>
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        let (outcome, result) = match result {
            Ok(v) => ("success", Ok(v)),
            Err(err) => {
                let timeout = matches!(err, SdkError::TimeoutError(_));
                let message = self.describe(&err);
                (
                    if timeout { "timeout" } else { "error" },
                    Err(S3Error {
                        operation,
                        target,
                        message,
                        timeout,
                    }),
                )
            }
        };
        self.record(operation, outcome, start);
        result
    }

    fn describe<E, R>(&self, err: &SdkError<E, R>) -> String
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        match err {
            SdkError::TimeoutError(_) => format!(
                "no answer from {} within the time limit (CERTUS_ASSURANCE_S3_TIMEOUT_SECONDS)",
                self.endpoint
            ),
            SdkError::DispatchFailure(f) => {
                let kind = if f.is_timeout() {
                    "timed out"
                } else if f.is_io() {
                    "connection failed"
                } else {
                    "request could not be sent"
                };
                format!(
                    "{kind} talking to {} ({}); check CERTUS_ASSURANCE_S3_ENDPOINT_URL and that S3 is reachable",
                    self.endpoint,
                    f.as_connector_error()
                        .map(|e| super::trust::root_cause(e))
                        .unwrap_or_else(|| "no detail".into())
                )
            }
            SdkError::ServiceError(e) => {
                let e = e.err();
                let code = e.code().unwrap_or("UnknownError");
                let hint = match code {
                    "NoSuchBucket" => {
                        "; create the bucket or fix CERTUS_ASSURANCE_DATALAKE_*_BUCKET or CERTUS_ASSURANCE_ARTIFACT_BUCKET"
                    }
                    "AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch" => {
                        "; check the S3 credentials and the bucket policy"
                    }
                    _ => "",
                };
                format!(
                    "{code}: {}{hint}",
                    super::trust::clip(e.message().unwrap_or("no message"), 300)
                )
            }
            SdkError::ResponseError(_) => {
                format!("the answer from {} could not be read", self.endpoint)
            }
            SdkError::ConstructionFailure(_) => {
                "the request could not be built (credentials or configuration); see the server log"
                    .to_string()
            }
            _ => "unexpected SDK error".to_string(),
        }
    }

    /// Uploads a whole object in one request. S3 checks the body against `sha256_b64`.
    pub async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
        sha256_b64: &str,
        content_type: &str,
        metadata: &HashMap<String, String>,
    ) -> Result<(), S3Error> {
        let size = body.len() as u64;
        let call = self
            .client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type(content_type)
            .set_metadata(Some(metadata.clone()))
            .checksum_sha256(sha256_b64)
            .body(ByteStream::from(body))
            .send();
        self.observe("put_object", s3_uri(bucket, key), call)
            .await?;
        self.metrics.uploads.s3_uploaded_bytes.inc_by(size);
        Ok(())
    }

    /// Starts a multipart upload (SHA-256 checksums per part); returns its upload id.
    pub async fn create_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        content_type: &str,
        metadata: &HashMap<String, String>,
    ) -> Result<String, S3Error> {
        let call = self
            .client
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .content_type(content_type)
            .set_metadata(Some(metadata.clone()))
            .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Sha256)
            .send();
        let out = self
            .observe("create_multipart_upload", s3_uri(bucket, key), call)
            .await?;
        out.upload_id().map(str::to_string).ok_or_else(|| S3Error {
            operation: "create_multipart_upload",
            target: s3_uri(bucket, key),
            message: "the answer has no UploadId".into(),
            timeout: false,
        })
    }

    /// Uploads one part; S3 checks it against `sha256_b64`.
    pub async fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Vec<u8>,
        sha256_b64: String,
    ) -> Result<UploadedPart, S3Error> {
        let size = body.len() as u64;
        let call = self
            .client
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .checksum_sha256(sha256_b64.clone())
            .body(ByteStream::from(body))
            .send();
        let out = self
            .observe("upload_part", s3_uri(bucket, key), call)
            .await?;
        self.metrics.uploads.s3_uploaded_bytes.inc_by(size);
        let etag = out.e_tag().map(str::to_string).ok_or_else(|| S3Error {
            operation: "upload_part",
            target: s3_uri(bucket, key),
            message: format!("part {number} was answered without an ETag"),
            timeout: false,
        })?;
        Ok(UploadedPart {
            number,
            etag,
            sha256_b64,
        })
    }

    /// Completes a multipart upload from its parts, in order.
    pub async fn complete_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[UploadedPart],
    ) -> Result<(), S3Error> {
        let completed = CompletedMultipartUpload::builder()
            .set_parts(Some(
                parts
                    .iter()
                    .map(|p| {
                        CompletedPart::builder()
                            .part_number(p.number)
                            .e_tag(&p.etag)
                            .checksum_sha256(&p.sha256_b64)
                            .build()
                    })
                    .collect(),
            ))
            .build();
        let call = self
            .client
            .complete_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(completed)
            .send();
        self.observe("complete_multipart_upload", s3_uri(bucket, key), call)
            .await?;
        Ok(())
    }

    /// Abandons a multipart upload: S3 drops its parts.
    pub async fn abort_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<(), S3Error> {
        let call = self
            .client
            .abort_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .send();
        self.observe("abort_multipart_upload", s3_uri(bucket, key), call)
            .await?;
        Ok(())
    }

    /// Incomplete multipart uploads whose key starts with `prefix`.
    pub async fn list_multipart_uploads(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> Result<Vec<PendingMultipart>, S3Error> {
        let mut out = Vec::new();
        let mut key_marker: Option<String> = None;
        let mut id_marker: Option<String> = None;
        loop {
            let call = self
                .client
                .list_multipart_uploads()
                .bucket(bucket)
                .prefix(prefix)
                .set_key_marker(key_marker.clone())
                .set_upload_id_marker(id_marker.clone())
                .send();
            let page = self
                .observe("list_multipart_uploads", s3_uri(bucket, prefix), call)
                .await?;
            for upload in page.uploads() {
                if let (Some(key), Some(id)) = (upload.key(), upload.upload_id()) {
                    out.push(PendingMultipart {
                        key: key.to_string(),
                        upload_id: id.to_string(),
                    });
                }
            }
            let next_key = page.next_key_marker().map(str::to_string);
            if page.is_truncated() != Some(true) || next_key.is_none() {
                break;
            }
            key_marker = next_key;
            id_marker = page.next_upload_id_marker().map(str::to_string);
        }
        Ok(out)
    }

    /// Size and metadata of an object; `None` when it does not exist (an answer, counted as a
    /// success).
    pub async fn head_object(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<ObjectInfo>, S3Error> {
        let start = Instant::now();
        let result = self
            .client
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await;
        if let Err(SdkError::ServiceError(e)) = &result {
            if e.err().is_not_found() {
                self.record("head_object", "success", start);
                return Ok(None);
            }
        }
        let out = self.settle("head_object", s3_uri(bucket, key), start, result)?;
        Ok(Some(ObjectInfo {
            size: out.content_length().unwrap_or(0).max(0) as u64,
            metadata: out
                .metadata()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                        .collect()
                })
                .unwrap_or_default(),
        }))
    }

    /// Server-side copy, keeping the source's metadata.
    pub async fn copy_object(
        &self,
        from_bucket: &str,
        from_key: &str,
        to_bucket: &str,
        to_key: &str,
    ) -> Result<(), S3Error> {
        let call = self
            .client
            .copy_object()
            .copy_source(format!(
                "{}/{}",
                encode_key(from_bucket),
                encode_key(from_key)
            ))
            .bucket(to_bucket)
            .key(to_key)
            .metadata_directive(MetadataDirective::Copy)
            .send();
        self.observe("copy_object", s3_uri(to_bucket, to_key), call)
            .await?;
        Ok(())
    }

    /// Keys and sizes of every object whose key starts with `prefix`, in key order.
    pub async fn list_objects(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> Result<Vec<(String, u64)>, S3Error> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let call = self
                .client
                .list_objects_v2()
                .bucket(bucket)
                .prefix(prefix)
                .set_continuation_token(token.clone())
                .send();
            let page = self
                .observe("list_objects", s3_uri(bucket, prefix), call)
                .await?;
            for object in page.contents() {
                if let Some(key) = object.key() {
                    out.push((key.to_string(), object.size().unwrap_or(0).max(0) as u64));
                }
            }
            token = page.next_continuation_token().map(str::to_string);
            if page.is_truncated() != Some(true) || token.is_none() {
                break;
            }
        }
        Ok(out)
    }

    /// Writes an object's body to `dest` (created or truncated); `None` when the object does not
    /// exist. Each chunk of the body must come within the per-attempt time limit.
    pub async fn get_object_to_file(
        &self,
        bucket: &str,
        key: &str,
        dest: &std::path::Path,
    ) -> Result<Option<u64>, S3Error> {
        let start = Instant::now();
        let result = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await;
        if let Err(SdkError::ServiceError(e)) = &result {
            if e.err().is_no_such_key() {
                self.record("get_object", "success", start);
                return Ok(None);
            }
        }
        let out = self.settle("get_object", s3_uri(bucket, key), start, result)?;
        let failed = |message: String, timeout: bool| S3Error {
            operation: "get_object",
            target: s3_uri(bucket, key),
            message,
            timeout,
        };
        let written = self
            .copy_body(out.body, dest)
            .await
            .map_err(|(message, timeout)| failed(message, timeout))?;
        Ok(Some(written))
    }

    /// Streams a body into `dest`; the error says what failed and whether it was the time limit.
    async fn copy_body(
        &self,
        mut body: ByteStream,
        dest: &std::path::Path,
    ) -> Result<u64, (String, bool)> {
        use tokio::io::AsyncWriteExt;
        let local = |e: std::io::Error| {
            (
                format!("the local copy could not be written: {}", e.kind()),
                false,
            )
        };
        let mut file = tokio::fs::File::create(dest).await.map_err(local)?;
        let mut written = 0u64;
        loop {
            let chunk = tokio::time::timeout(self.attempt_timeout, body.next())
                .await
                .map_err(|_| {
                    (
                        format!(
                            "the body from {} stalled past the time limit (CERTUS_ASSURANCE_S3_TIMEOUT_SECONDS)",
                            self.endpoint
                        ),
                        true,
                    )
                })?;
            match chunk {
                None => break,
                Some(Ok(bytes)) => {
                    written += bytes.len() as u64;
                    file.write_all(&bytes).await.map_err(local)?;
                }
                Some(Err(err)) => return Err((format!("reading the body failed: {err}"), false)),
            }
        }
        file.flush().await.map_err(local)?;
        Ok(written)
    }

    /// Deletes the given keys (at most 1000 per request); a key that does not exist is no error.
    pub async fn delete_objects(&self, bucket: &str, keys: &[String]) -> Result<(), S3Error> {
        use aws_sdk_s3::types::{Delete, ObjectIdentifier};
        let unbuildable = |e: aws_sdk_s3::error::BuildError| S3Error {
            operation: "delete_objects",
            target: s3_uri(bucket, ""),
            message: format!("the request could not be built: {e}"),
            timeout: false,
        };
        for batch in keys.chunks(1000) {
            let objects = batch
                .iter()
                .map(|k| ObjectIdentifier::builder().key(k).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(unbuildable)?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(unbuildable)?;
            let call = self
                .client
                .delete_objects()
                .bucket(bucket)
                .delete(delete)
                .send();
            let out = self
                .observe("delete_objects", s3_uri(bucket, &batch[0]), call)
                .await?;
            if let Some(err) = out.errors().first() {
                return Err(S3Error {
                    operation: "delete_objects",
                    target: s3_uri(bucket, err.key().unwrap_or("")),
                    message: format!(
                        "{}: {}",
                        err.code().unwrap_or("UnknownError"),
                        err.message().unwrap_or("no message")
                    ),
                    timeout: false,
                });
            }
        }
        Ok(())
    }

    /// Server-side copy that replaces the metadata with `metadata` (a stored bundle file copied
    /// into the raw bucket under the upload's own metadata).
    pub async fn copy_object_with_metadata(
        &self,
        from: (&str, &str),
        to: (&str, &str),
        content_type: &str,
        metadata: &HashMap<String, String>,
    ) -> Result<(), S3Error> {
        let call = self
            .client
            .copy_object()
            .copy_source(format!("{}/{}", encode_key(from.0), encode_key(from.1)))
            .bucket(to.0)
            .key(to.1)
            .content_type(content_type)
            .metadata_directive(MetadataDirective::Replace)
            .set_metadata(Some(metadata.clone()))
            .send();
        self.observe("copy_object", s3_uri(to.0, to.1), call)
            .await?;
        Ok(())
    }
}

/// `s3://bucket/key`
pub fn s3_uri(bucket: &str, key: &str) -> String {
    format!("s3://{bucket}/{key}")
}

/// Percent-encodes a key for the `x-amz-copy-source` header, keeping `/` and unreserved bytes.
fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_sources_are_percent_encoded() {
        assert_eq!(encode_key("a/b c+d.json"), "a/b%20c%2Bd.json");
        assert_eq!(encode_key("x/ü"), "x/%C3%BC");
    }
}
