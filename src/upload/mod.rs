//! The uploader: asks Trust for permission, uploads what was permitted, and reports each file.
//! Nothing reaches S3 without a permit, because the only way to call [`Uploader::upload`] is with
//! the `upload_permission_id` of a [`trust::Permit`] and the files that were declared for it.
//!
//! The steps, driven by the job engine (which owns the upload status):
//! 1. [`Uploader::declare`] hashes every bundle file once (sha256, size);
//! 2. [`Uploader::permit_request`] builds Trust's request, signed with the ed25519 key when one is
//!    configured, and [`Uploader::ask_trust`] sends it (one decision per call, counted by outcome);
//! 3. [`Uploader::upload`] sends each declared file to `<raw prefix>/<test_id>/incoming/<path>` in
//!    the raw bucket, re-hashing it as it is read (a file changed since it was declared is refused
//!    before its object is completed), checks each object with HEAD, and only when every file is
//!    in the raw bucket copies them server-side to `<golden prefix>/<test_id>/golden/<path>`.
//!
//! Keys are a function of the scan and the path only, so a later attempt overwrites instead of
//! duplicating, and each attempt first aborts multipart uploads an interrupted attempt left.

pub mod artifact_store;
pub mod object_store;
pub mod trust;

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use base64::Engine;
use futures_util::future::BoxFuture;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::config::{UploadConfig, S3_MAX_SINGLE_OBJECT_BYTES};
use crate::metrics::Metrics;
use object_store::{s3_uri, ObjectStore, S3Error, UploadedPart};
use trust::{
    ArtifactDeclaration, HttpTrustClient, InnerSignature, PermitRequest, StorageDestinations,
    TrustClient, TrustDecision, TrustError,
};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Where permitted files go.
#[derive(Debug, Clone)]
pub struct UploadTargets {
    pub raw_bucket: String,
    pub golden_bucket: String,
    /// Without surrounding `/`; may be empty.
    pub raw_prefix: String,
    pub golden_prefix: String,
    /// Files larger than this go up in parts of this size.
    pub multipart_threshold: u64,
}

impl UploadTargets {
    /// `<raw prefix>/<test_id>/incoming/`
    pub fn raw_dir(&self, test_id: &str) -> String {
        join_key(&self.raw_prefix, &format!("{test_id}/incoming/"))
    }

    /// `<golden prefix>/<test_id>/golden/`
    pub fn golden_dir(&self, test_id: &str) -> String {
        join_key(&self.golden_prefix, &format!("{test_id}/golden/"))
    }
}

fn join_key(prefix: &str, rest: &str) -> String {
    if prefix.is_empty() {
        rest.to_string()
    } else {
        format!("{prefix}/{rest}")
    }
}

/// What an upload is about: plain data built by the job engine from the scan.
#[derive(Debug, Clone)]
pub struct UploadSubject {
    pub test_id: String,
    pub workspace_id: String,
    pub component_id: String,
    pub assessment_id: String,
    pub manifest_digest: String,
    /// Trust's `metadata`: `git_url` (credentials stripped), `branch`, resolved `commit`, or the
    /// provenance of a directory or archive scan.
    pub provenance: serde_json::Value,
    /// The scan's bundle directory.
    pub bundle_dir: PathBuf,
    /// Bundle paths (relative, `/`-separated) to upload.
    pub files: Vec<String>,
}

/// A bundle file hashed once, as declared to Trust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredFile {
    pub name: String,
    pub path: PathBuf,
    pub sha256_hex: String,
    pub size: u64,
}

/// `{"raw": {path: s3-uri}, "golden": {path: s3-uri}}`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RemoteArtifacts {
    pub raw: BTreeMap<String, String>,
    pub golden: BTreeMap<String, String>,
}

/// Progress of one upload, reported after each file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UploadProgress {
    /// `raw` (uploading to the raw bucket), `golden` (copying), `done`.
    pub phase: &'static str,
    pub files_total: usize,
    pub files_uploaded: usize,
    pub files_promoted: usize,
    pub bytes_total: u64,
    pub bytes_uploaded: u64,
}

/// Receives progress reports (the job engine records them on the scan).
pub trait ProgressReport: Send + Sync {
    fn report(&self, progress: UploadProgress) -> BoxFuture<'_, ()>;
}

/// Why an upload after a permit did not finish. Messages say what happened and what to do.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UploadFailure {
    #[error("bundle file `{name}` changed after it was declared to Trust (its sha256 or size differs); request the upload again to declare the current files")]
    FileChanged { name: String },
    #[error("bundle file `{name}` could not be read: {message}")]
    FileUnreadable { name: String, message: String },
    #[error(
        "bundle file `{name}` is larger than 5 GiB, the largest object S3 can copy in one request"
    )]
    FileTooLarge { name: String },
    #[error("{0}; request the upload again once S3 is available")]
    S3(#[from] S3Error),
    #[error("S3 verification of {uri} failed: {message}; request the upload again")]
    Verification { uri: String, message: String },
    #[error("the upload was interrupted by a shutdown; request it again")]
    Interrupted,
    /// A scan id or bundle path that cannot be part of an object key (never produced by the
    /// service itself; checked so that no key can leave its scan's prefix).
    #[error("`{0}` cannot be used in an object key")]
    InvalidKey(String),
}

/// A scan id as an object-key segment: `[A-Za-z0-9_-]`, 1 to 64 characters.
fn valid_key_segment(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A bundle path inside a key: relative, `/`-separated, no empty, `.` or `..` segment, and only
/// printable ASCII without `\`.
fn valid_key_path(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 512
        && p.bytes().all(|b| b.is_ascii_graphic() && b != b'\\')
        && p.split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}

/// The upload client. Cheap to share behind an `Arc`.
pub struct Uploader {
    trust: Arc<dyn TrustClient>,
    store: ObjectStore,
    targets: UploadTargets,
    signing_key: Option<Arc<Ed25519KeyPair>>,
    metrics: Metrics,
    /// The artifact store: a bundle file stored in S3 goes to the raw bucket by a server-side
    /// copy (one S3 client, so source and destination share its endpoint).
    artifacts: Option<artifact_store::ArtifactStore>,
}

impl Uploader {
    /// The uploader of a configuration: the HTTP Trust client, the S3 client, and the signing
    /// key from `signing_seed`, the ed25519 seed of the key file `App::build` read (one key file
    /// serves the attestation and the upload signature).
    pub async fn from_config(
        config: &UploadConfig,
        signing_seed: Option<[u8; 32]>,
        metrics: Metrics,
    ) -> anyhow::Result<Uploader> {
        let base = config
            .trust_url()
            .context("CERTUS_ASSURANCE_TRUST_BASE_URL is required for uploads")?;
        let trust = HttpTrustClient::new(&base, config.trust_token.clone(), config.trust_timeout)?;
        let signing_key = match &signing_seed {
            Some(seed) => Some(Arc::new(signing_key_pair(seed)?)),
            None => None,
        };
        let store = ObjectStore::connect(config, metrics.clone()).await;
        Ok(Uploader::new(
            Arc::new(trust),
            store,
            UploadTargets {
                raw_bucket: config.raw_bucket.clone(),
                golden_bucket: config.golden_bucket.clone(),
                raw_prefix: config.raw_prefix.clone(),
                golden_prefix: config.golden_prefix.clone(),
                multipart_threshold: config.multipart_threshold,
            },
            signing_key,
            metrics,
        ))
    }

    /// An uploader with a given Trust client (tests may slip in their own).
    pub fn new(
        trust: Arc<dyn TrustClient>,
        store: ObjectStore,
        targets: UploadTargets,
        signing_key: Option<Arc<Ed25519KeyPair>>,
        metrics: Metrics,
    ) -> Uploader {
        Uploader {
            trust,
            store,
            targets,
            signing_key,
            metrics,
            artifacts: None,
        }
    }

    /// Copies bundle files from `artifacts` when it keeps them in S3 (server-side copy) instead
    /// of sending the local copy.
    pub fn with_artifact_store(mut self, artifacts: artifact_store::ArtifactStore) -> Uploader {
        self.artifacts = Some(artifacts).filter(|a| a.is_remote());
        self
    }

    pub fn targets(&self) -> &UploadTargets {
        &self.targets
    }

    /// Whether declarations are signed (the `verified` tier needs it).
    pub fn signs(&self) -> bool {
        self.signing_key.is_some()
    }

    /// Hashes every file of the subject once, on the blocking pool.
    pub async fn declare(
        &self,
        subject: &UploadSubject,
    ) -> Result<Vec<DeclaredFile>, UploadFailure> {
        let dir = subject.bundle_dir.clone();
        let names = subject.files.clone();
        tokio::task::spawn_blocking(move || {
            names
                .iter()
                .map(|name| declare_file(&dir, name))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|e| UploadFailure::FileUnreadable {
            name: "(bundle)".into(),
            message: format!("the hashing task failed: {e}"),
        })?
    }

    /// Trust's request for these files, signed when a key is configured.
    pub fn permit_request(
        &self,
        subject: &UploadSubject,
        tier: &str,
        signer: &str,
        files: &[DeclaredFile],
    ) -> PermitRequest {
        let artifacts: Vec<ArtifactDeclaration> = files
            .iter()
            .map(|f| ArtifactDeclaration {
                name: f.name.clone(),
                hash: format!("sha256:{}", f.sha256_hex),
                size: f.size,
            })
            .collect();
        let canonical = canonical_digest_list(&artifacts);
        let timestamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        let inner_signature = match &self.signing_key {
            Some(key) => InnerSignature {
                signer: signer.to_string(),
                timestamp,
                signature: Some(B64.encode(key.sign(canonical.as_bytes()).as_ref())),
                algorithm: "ed25519".into(),
                certificate: Some(B64.encode(key.public_key().as_ref())),
            },
            None => InnerSignature {
                signer: signer.to_string(),
                timestamp,
                signature: None,
                algorithm: "none".into(),
                certificate: None,
            },
        };
        PermitRequest {
            scan_id: subject.test_id.clone(),
            tier: tier.to_string(),
            inner_signature,
            artifacts,
            metadata: subject.provenance.clone(),
            storage_destinations: StorageDestinations {
                raw_s3: s3_uri(
                    &self.targets.raw_bucket,
                    &self.targets.raw_dir(&subject.test_id),
                ),
                oci_registry: None,
            },
        }
    }

    /// One request to Trust, counted and timed by outcome.
    pub async fn ask_trust(&self, request: &PermitRequest) -> Result<TrustDecision, TrustError> {
        let start = Instant::now();
        let result = self.trust.verify_and_permit(request).await;
        let outcome = match &result {
            Ok(TrustDecision::Permitted(_)) => "permitted",
            Ok(TrustDecision::Denied { .. }) => "denied",
            Err(e) => e.outcome(),
        };
        self.metrics
            .uploads
            .trust_requests
            .with_label_values(&[outcome])
            .inc();
        self.metrics
            .uploads
            .trust_request_duration
            .with_label_values(&[outcome])
            .observe(start.elapsed().as_secs_f64());
        result
    }

    /// Uploads the declared files under `permission_id`: every file to the raw bucket (verified),
    /// then every file copied to the golden bucket (verified).
    pub async fn upload(
        &self,
        subject: &UploadSubject,
        permission_id: &str,
        files: &[DeclaredFile],
        progress: &dyn ProgressReport,
        cancel: &CancellationToken,
    ) -> Result<RemoteArtifacts, UploadFailure> {
        if !valid_key_segment(&subject.test_id) {
            return Err(UploadFailure::InvalidKey(subject.test_id.clone()));
        }
        if let Some(bad) = files.iter().find(|f| !valid_key_path(&f.name)) {
            return Err(UploadFailure::InvalidKey(bad.name.clone()));
        }
        let t = &self.targets;
        let raw_dir = t.raw_dir(&subject.test_id);
        let golden_dir = t.golden_dir(&subject.test_id);
        // Parts of an attempt that was cut off would otherwise stay in the bucket (and be billed).
        let scan_prefix = join_key(&t.raw_prefix, &format!("{}/", subject.test_id));
        for stale in self
            .store
            .list_multipart_uploads(&t.raw_bucket, &scan_prefix)
            .await?
        {
            tracing::info!(s3.key = %stale.key, "aborting a multipart upload left by an earlier attempt");
            self.store
                .abort_multipart_upload(&t.raw_bucket, &stale.key, &stale.upload_id)
                .await?;
        }

        let mut state = UploadProgress {
            phase: "raw",
            files_total: files.len(),
            files_uploaded: 0,
            files_promoted: 0,
            bytes_total: files.iter().map(|f| f.size).sum(),
            bytes_uploaded: 0,
        };
        progress.report(state.clone()).await;
        let mut remote = RemoteArtifacts::default();
        for file in files {
            if cancel.is_cancelled() {
                return Err(UploadFailure::Interrupted);
            }
            let key = format!("{raw_dir}{}", file.name);
            let metadata = object_metadata(subject, permission_id, file);
            if !self
                .copy_stored_file(subject, file, (&t.raw_bucket, &key), &metadata)
                .await?
            {
                self.put_file(&t.raw_bucket, &key, file, &metadata, cancel)
                    .await?;
            }
            self.verify(&t.raw_bucket, &key, file).await?;
            remote
                .raw
                .insert(file.name.clone(), s3_uri(&t.raw_bucket, &key));
            state.files_uploaded += 1;
            state.bytes_uploaded += file.size;
            progress.report(state.clone()).await;
        }

        state.phase = "golden";
        for file in files {
            if cancel.is_cancelled() {
                return Err(UploadFailure::Interrupted);
            }
            let from = format!("{raw_dir}{}", file.name);
            let to = format!("{golden_dir}{}", file.name);
            self.store
                .copy_object(&t.raw_bucket, &from, &t.golden_bucket, &to)
                .await?;
            self.verify(&t.golden_bucket, &to, file).await?;
            remote
                .golden
                .insert(file.name.clone(), s3_uri(&t.golden_bucket, &to));
            state.files_promoted += 1;
            progress.report(state.clone()).await;
        }
        state.phase = "done";
        progress.report(state).await;
        Ok(remote)
    }

    /// Copies one declared file from the artifact store into `to`, server-side, when the store
    /// keeps it in S3 and the stored object is the declared one (its size and the sha256 it was
    /// stored with, which S3 checked when it was written). Returns false when the file must be
    /// sent instead (no S3 store, an object too large for one copy, or one that differs).
    async fn copy_stored_file(
        &self,
        subject: &UploadSubject,
        file: &DeclaredFile,
        to: (&str, &str),
        metadata: &HashMap<String, String>,
    ) -> Result<bool, UploadFailure> {
        let Some((bucket, key)) = self
            .artifacts
            .as_ref()
            .and_then(|a| a.stored_file(&subject.test_id, &file.name))
        else {
            return Ok(false);
        };
        if file.size > S3_MAX_SINGLE_OBJECT_BYTES {
            return Ok(false);
        }
        let same = self
            .store
            .head_object(&bucket, &key)
            .await?
            .is_some_and(|info| {
                info.size == file.size && info.metadata.get("sha256") == Some(&file.sha256_hex)
            });
        if !same {
            return Ok(false);
        }
        self.store
            .copy_object_with_metadata((&bucket, &key), to, content_type(&file.name), metadata)
            .await?;
        Ok(true)
    }

    /// Checks an object's size and recorded sha256 against the declaration.
    async fn verify(
        &self,
        bucket: &str,
        key: &str,
        file: &DeclaredFile,
    ) -> Result<(), UploadFailure> {
        let uri = s3_uri(bucket, key);
        let info = self.store.head_object(bucket, key).await?.ok_or_else(|| {
            UploadFailure::Verification {
                uri: uri.clone(),
                message: "the object is missing right after it was written".into(),
            }
        })?;
        if info.size != file.size {
            return Err(UploadFailure::Verification {
                uri,
                message: format!("size {} instead of {}", info.size, file.size),
            });
        }
        if info.metadata.get("sha256") != Some(&file.sha256_hex) {
            return Err(UploadFailure::Verification {
                uri,
                message: "its sha256 metadata does not match the declaration".into(),
            });
        }
        Ok(())
    }

    /// Sends one file, re-hashing it as it is read; a file that no longer matches its declaration
    /// is never completed in S3.
    async fn put_file(
        &self,
        bucket: &str,
        key: &str,
        file: &DeclaredFile,
        metadata: &HashMap<String, String>,
        cancel: &CancellationToken,
    ) -> Result<(), UploadFailure> {
        let content_type = content_type(&file.name);
        if file.size <= self.targets.multipart_threshold {
            let declared = file.clone();
            let (body, whole) =
                tokio::task::spawn_blocking(move || -> Result<(Vec<u8>, String), UploadFailure> {
                    let body =
                        std::fs::read(&declared.path).map_err(|e| unreadable(&declared, e))?;
                    let hex = hex::encode(Sha256::digest(&body));
                    if hex != declared.sha256_hex || body.len() as u64 != declared.size {
                        return Err(UploadFailure::FileChanged {
                            name: declared.name,
                        });
                    }
                    Ok((body, hex))
                })
                .await
                .map_err(|e| task_failed(file, e))??;
            let sha256_b64 = B64.encode(hex::decode(whole).expect("hex of a digest"));
            self.store
                .put_object(bucket, key, body, &sha256_b64, content_type, metadata)
                .await?;
            return Ok(());
        }

        let upload_id = self
            .store
            .create_multipart_upload(bucket, key, content_type, metadata)
            .await?;
        let result = self.send_parts(bucket, key, &upload_id, file, cancel).await;
        match result {
            Ok(parts) => {
                if let Err(err) = self
                    .store
                    .complete_multipart_upload(bucket, key, &upload_id, &parts)
                    .await
                {
                    self.abort_quietly(bucket, key, &upload_id).await;
                    return Err(err.into());
                }
                Ok(())
            }
            Err(failure) => {
                self.abort_quietly(bucket, key, &upload_id).await;
                Err(failure)
            }
        }
    }

    /// Reads and sends the parts of one file. The whole file's digest (and that it did not grow)
    /// is checked before the last part is sent, so a changed file is never completed.
    async fn send_parts(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        file: &DeclaredFile,
        cancel: &CancellationToken,
    ) -> Result<Vec<UploadedPart>, UploadFailure> {
        struct Reader {
            handle: std::fs::File,
            whole: Sha256,
            read: u64,
        }
        /// One part read, and whether it is the last one.
        struct Chunk {
            reader: Reader,
            bytes: Vec<u8>,
            last: bool,
        }
        let part_size = self.targets.multipart_threshold;
        let handle = std::fs::File::open(&file.path).map_err(|e| unreadable(file, e))?;
        let mut reader = Reader {
            handle,
            whole: Sha256::new(),
            read: 0,
        };
        let mut parts = Vec::new();
        loop {
            if cancel.is_cancelled() {
                return Err(UploadFailure::Interrupted);
            }
            let declared = file.clone();
            let chunk = tokio::task::spawn_blocking(move || -> Result<Chunk, UploadFailure> {
                let mut r = reader;
                let mut bytes = Vec::with_capacity(part_size as usize);
                (&mut r.handle)
                    .take(part_size)
                    .read_to_end(&mut bytes)
                    .map_err(|e| unreadable(&declared, e))?;
                r.whole.update(&bytes);
                r.read += bytes.len() as u64;
                let changed = || UploadFailure::FileChanged {
                    name: declared.name.clone(),
                };
                if r.read > declared.size
                    || (r.read < declared.size && (bytes.len() as u64) < part_size)
                {
                    return Err(changed());
                }
                let last = r.read == declared.size;
                if last {
                    let mut probe = [0u8; 1];
                    let grew = r
                        .handle
                        .read(&mut probe)
                        .map_err(|e| unreadable(&declared, e))?
                        > 0;
                    if grew || hex::encode(r.whole.clone().finalize()) != declared.sha256_hex {
                        return Err(changed());
                    }
                }
                Ok(Chunk {
                    reader: r,
                    bytes,
                    last,
                })
            })
            .await
            .map_err(|e| task_failed(file, e))??;
            let part_sha = B64.encode(Sha256::digest(&chunk.bytes));
            let number = parts.len() as i32 + 1;
            parts.push(
                self.store
                    .upload_part(bucket, key, upload_id, number, chunk.bytes, part_sha)
                    .await?,
            );
            if chunk.last {
                return Ok(parts);
            }
            reader = chunk.reader;
        }
    }

    async fn abort_quietly(&self, bucket: &str, key: &str, upload_id: &str) {
        if let Err(err) = self
            .store
            .abort_multipart_upload(bucket, key, upload_id)
            .await
        {
            tracing::warn!(error = %err, "could not abort a multipart upload; the next attempt aborts it");
        }
    }
}

fn unreadable(file: &DeclaredFile, err: std::io::Error) -> UploadFailure {
    UploadFailure::FileUnreadable {
        name: file.name.clone(),
        message: err.kind().to_string(),
    }
}

fn task_failed(file: &DeclaredFile, err: tokio::task::JoinError) -> UploadFailure {
    UploadFailure::FileUnreadable {
        name: file.name.clone(),
        message: format!("the reading task failed: {err}"),
    }
}

/// Hashes one bundle file (streaming) and checks its name can become an object key.
fn declare_file(dir: &Path, name: &str) -> Result<DeclaredFile, UploadFailure> {
    let safe = !name.is_empty()
        && name.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-+@=,".contains(&b))
        });
    if !safe {
        return Err(UploadFailure::FileUnreadable {
            name: name.to_string(),
            message: "the path is not a plain relative bundle path".into(),
        });
    }
    let path = dir.join(name);
    let unreadable = |e: std::io::Error| UploadFailure::FileUnreadable {
        name: name.to_string(),
        message: e.kind().to_string(),
    };
    let meta = std::fs::symlink_metadata(&path).map_err(unreadable)?;
    if !meta.is_file() {
        return Err(UploadFailure::FileUnreadable {
            name: name.to_string(),
            message: "not a regular file".into(),
        });
    }
    let mut handle = std::fs::File::open(&path).map_err(unreadable)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = handle.read(&mut buf).map_err(unreadable)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    if size > S3_MAX_SINGLE_OBJECT_BYTES {
        return Err(UploadFailure::FileTooLarge {
            name: name.to_string(),
        });
    }
    Ok(DeclaredFile {
        name: name.to_string(),
        path,
        sha256_hex: hex::encode(hasher.finalize()),
        size,
    })
}

/// The object metadata of DESIGN.md.
fn object_metadata(
    subject: &UploadSubject,
    permission_id: &str,
    file: &DeclaredFile,
) -> HashMap<String, String> {
    HashMap::from([
        ("test_id".to_string(), subject.test_id.clone()),
        ("workspace_id".to_string(), subject.workspace_id.clone()),
        ("component_id".to_string(), subject.component_id.clone()),
        ("assessment_id".to_string(), subject.assessment_id.clone()),
        (
            "manifest_digest".to_string(),
            subject.manifest_digest.clone(),
        ),
        (
            "upload_permission_id".to_string(),
            permission_id.to_string(),
        ),
        ("sha256".to_string(), file.sha256_hex.clone()),
    ])
}

fn content_type(name: &str) -> &'static str {
    if name.ends_with(".json") {
        "application/json"
    } else if name.ends_with(".jsonl") {
        "application/x-ndjson"
    } else if name.ends_with(".log") || name.ends_with(".txt") {
        "text/plain; charset=utf-8"
    } else {
        "application/octet-stream"
    }
}

/// The bytes the inner signature covers: one line per declared file, sorted by name,
/// `sha256:<hex>␠␠<name>\n` (the `sha256sum` layout with the algorithm prefix).
pub fn canonical_digest_list(artifacts: &[ArtifactDeclaration]) -> String {
    let mut sorted: Vec<&ArtifactDeclaration> = artifacts.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    sorted
        .iter()
        .map(|a| format!("{}  {}\n", a.hash, a.name))
        .collect()
}

/// The key pair that signs upload requests, from an ed25519 seed.
pub fn signing_key_pair(seed: &[u8; 32]) -> anyhow::Result<Ed25519KeyPair> {
    Ed25519KeyPair::from_seed_unchecked(seed).map_err(|e| {
        anyhow::anyhow!("CERTUS_ASSURANCE_SIGNING_KEY_FILE: not a usable ed25519 key ({e})")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_keys_accept_only_plain_ids_and_bundle_paths() {
        assert!(valid_key_segment("test_0123456789ab"));
        for bad in ["", "..", "a/b", "a\u{0}b", "t\u{ff0e}", &"a".repeat(65)] {
            assert!(!valid_key_segment(bad), "{bad:?}");
        }
        for ok in [
            "scan.json",
            "reports/sast/bandit.sarif.json",
            "logs/runner.log",
        ] {
            assert!(valid_key_path(ok), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "reports/../../x",
            "reports//x",
            "./x",
            "a\\b",
            "a b",
            "a\u{0}b",
            "r\u{e9}port",
        ] {
            assert!(!valid_key_path(bad), "{bad:?}");
        }
    }

    #[test]
    fn canonical_list_is_sorted_and_line_based() {
        let list = canonical_digest_list(&[
            ArtifactDeclaration {
                name: "summary.json".into(),
                hash: "sha256:bb".into(),
                size: 2,
            },
            ArtifactDeclaration {
                name: "logs/runner.log".into(),
                hash: "sha256:aa".into(),
                size: 1,
            },
        ]);
        assert_eq!(
            list,
            "sha256:aa  logs/runner.log\nsha256:bb  summary.json\n"
        );
    }

    #[test]
    fn keys_follow_the_layout() {
        let t = UploadTargets {
            raw_bucket: "raw".into(),
            golden_bucket: "golden".into(),
            raw_prefix: "security-scans".into(),
            golden_prefix: String::new(),
            multipart_threshold: 5 << 20,
        };
        assert_eq!(
            t.raw_dir("test_0123456789ab"),
            "security-scans/test_0123456789ab/incoming/"
        );
        assert_eq!(
            t.golden_dir("test_0123456789ab"),
            "test_0123456789ab/golden/"
        );
    }

    #[test]
    fn signing_keys_load_from_pem_and_sign_verifiably() {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            B64.encode(pkcs8.as_ref())
        );
        std::fs::write(dir.path().join("k.pem"), pem).unwrap();
        let seed =
            crate::pipeline::attestation::AttestationKey::from_file(&dir.path().join("k.pem"))
                .unwrap()
                .seed();
        let key = signing_key_pair(&seed).unwrap();
        let sig = key.sign(b"hello");
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::ED25519,
            key.public_key().as_ref(),
        )
        .verify(b"hello", sig.as_ref())
        .unwrap();
    }

    #[test]
    fn declaring_refuses_paths_that_leave_the_bundle() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.json"), b"{}").unwrap();
        let ok = declare_file(dir.path(), "a.json").unwrap();
        assert_eq!(ok.size, 2);
        assert_eq!(ok.sha256_hex, hex::encode(Sha256::digest(b"{}")));
        assert!(declare_file(dir.path(), "../a.json").is_err());
        assert!(declare_file(dir.path(), "/etc/passwd").is_err());
    }
}
