//! The artifact store: where finished bundles and uploaded archives are kept so that any replica
//! can read them. Two backends behind one handle:
//!
//! - **local** (the default): bundles stay where the pipeline wrote them,
//!   `<ARTIFACT_ROOT>/<test_id>/`, and archives in `<DATA_DIR>/uploads/`. Publishing is a no-op.
//! - **s3**: the replica that runs a scan writes its bundle in `<ARTIFACT_ROOT>/<test_id>/` as
//!   scratch, then publishes each file as one object, `<prefix>/bundles/<test_id>/<path>` (a
//!   PutObject is atomic: a reader sees a whole file or none). Objects an earlier run of the same
//!   scan left that this run did not write are deleted, so the stored bundle is exactly this
//!   run's. Any replica reads a finished bundle through a local copy, fetched once into
//!   `<ARTIFACT_ROOT>/.cache/<test_id>/` (downloaded beside it, then renamed into place), so the
//!   readers (artifacts, findings, stream replay, the Trust/S3 upload) work on plain files.
//!   Archives go to `<prefix>/archives/<sha256>.<ext>` and are fetched into `<DATA_DIR>/uploads/`
//!   by the replica that claims a scan of one.
//!
//! Every S3 call goes through [`ObjectStore`] (timeouts, retries, the S3 metrics); its failures
//! come back as [`StoreUnavailable`], which the API answers with 503 and a worker turns into the
//! scan's failure.

use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use base64::Engine;
use sha2::{Digest, Sha256};

use super::object_store::{ObjectStore, S3Error};
use super::{content_type, join_key, B64};

/// Files larger than this are published in parts of this size.
const PART_BYTES: u64 = 16 * 1024 * 1024;
/// Where fetched copies of stored bundles live, under the artifact root.
pub const CACHE_DIR: &str = ".cache";

/// The artifact store could not be reached or refused an operation; says what to check.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the artifact store is unavailable: {0}")]
pub struct StoreUnavailable(pub S3Error);

/// The bucket and prefix of the S3 backend.
#[derive(Clone)]
struct Remote {
    s3: ObjectStore,
    bucket: String,
    /// Without surrounding `/`; may be empty.
    prefix: String,
}

/// The artifact store handle. Cheap to clone.
#[derive(Clone)]
pub struct ArtifactStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// `ARTIFACT_ROOT`: bundles (local backend), scratch bundles and fetched copies (s3).
    root: PathBuf,
    /// `<DATA_DIR>/uploads`: archives (local backend), fetched copies of archives (s3).
    upload_dir: PathBuf,
    remote: Option<Remote>,
}

impl ArtifactStore {
    /// The local backend: files under `root` and `upload_dir`.
    pub fn local(root: PathBuf, upload_dir: PathBuf) -> ArtifactStore {
        ArtifactStore {
            inner: Arc::new(Inner {
                root,
                upload_dir,
                remote: None,
            }),
        }
    }

    /// The S3 backend: objects in `bucket` under `prefix`, local copies under `root` and
    /// `upload_dir`.
    pub fn s3(
        root: PathBuf,
        upload_dir: PathBuf,
        s3: ObjectStore,
        bucket: String,
        prefix: String,
    ) -> ArtifactStore {
        ArtifactStore {
            inner: Arc::new(Inner {
                root,
                upload_dir,
                remote: Some(Remote { s3, bucket, prefix }),
            }),
        }
    }

    /// Whether bundles and archives live in object storage (shared by every replica).
    pub fn is_remote(&self) -> bool {
        self.inner.remote.is_some()
    }

    /// Where the pipeline writes the bundle of a scan this replica runs.
    pub fn scratch_dir(&self, test_id: &str) -> PathBuf {
        self.inner.root.join(test_id)
    }

    /// `<prefix>/bundles/<test_id>/`
    fn bundle_prefix(remote: &Remote, test_id: &str) -> String {
        join_key(&remote.prefix, &format!("bundles/{test_id}/"))
    }

    /// `<prefix>/archives/<name>`
    fn archive_key(remote: &Remote, name: &str) -> String {
        join_key(&remote.prefix, &format!("archives/{name}"))
    }

    /// The bucket and key of one stored bundle file (s3 backend only): the source of a
    /// server-side copy into the upload buckets.
    pub fn stored_file(&self, test_id: &str, rel: &str) -> Option<(String, String)> {
        let remote = self.inner.remote.as_ref()?;
        Some((
            remote.bucket.clone(),
            format!("{}{rel}", Self::bundle_prefix(remote, test_id)),
        ))
    }

    /// Publishes `files` (relative paths, as `list_files` of the pipeline's bundle gives them) of
    /// a scan's scratch bundle, one object each, and deletes stored files of the bundle this run
    /// did not write. Returns how many files were published (0 on the local backend, where the
    /// scratch bundle is the bundle).
    pub async fn publish_bundle(&self, test_id: &str, files: Vec<String>) -> anyhow::Result<usize> {
        let Some(remote) = &self.inner.remote else {
            return Ok(0);
        };
        let dir = self.scratch_dir(test_id);
        // A `.tmp` file is a write that never finished (write_json renames it into place).
        let files: Vec<String> = files.into_iter().filter(|f| !f.ends_with(".tmp")).collect();
        let prefix = Self::bundle_prefix(remote, test_id);
        let stored = remote
            .s3
            .list_objects(&remote.bucket, &prefix)
            .await
            .map_err(StoreUnavailable)?;
        for rel in &files {
            put_file(remote, &dir.join(rel), &format!("{prefix}{rel}")).await?;
        }
        // `stream.jsonl` is stored after the rest, once it holds the terminal event.
        let mut wanted: BTreeSet<String> = files.iter().map(|f| format!("{prefix}{f}")).collect();
        wanted.insert(format!("{prefix}stream.jsonl"));
        let stale: Vec<String> = stored
            .into_iter()
            .map(|(key, _)| key)
            .filter(|key| !wanted.contains(key))
            .collect();
        if !stale.is_empty() {
            remote
                .s3
                .delete_objects(&remote.bucket, &stale)
                .await
                .map_err(StoreUnavailable)?;
        }
        Ok(files.len())
    }

    /// Publishes one file of a scan's scratch bundle (the final `stream.jsonl`), if it exists.
    pub async fn publish_bundle_file(&self, test_id: &str, rel: &str) -> anyhow::Result<()> {
        let Some(remote) = &self.inner.remote else {
            return Ok(());
        };
        let path = self.scratch_dir(test_id).join(rel);
        if tokio::fs::metadata(&path).await.is_err() {
            // Nothing was written (a scan that ended before any event): nothing to store.
            return Ok(());
        }
        let key = format!("{}{rel}", Self::bundle_prefix(remote, test_id));
        put_file(remote, &path, &key).await
    }

    /// Removes a scan's scratch bundle once it is published (s3 backend only: on the local
    /// backend the scratch bundle is the bundle).
    pub async fn drop_scratch(&self, test_id: &str) {
        if self.is_remote() {
            remove_dirs(vec![self.scratch_dir(test_id)]).await;
        }
    }

    /// A local directory holding the scan's bundle, for reading. On the s3 backend, a finished
    /// scan's bundle is fetched once into the cache; an unfinished scan's is its scratch
    /// directory if this replica runs it. The directory does not exist when there is no bundle.
    pub async fn bundle_dir(&self, test_id: &str, finished: bool) -> anyhow::Result<PathBuf> {
        let Some(remote) = &self.inner.remote else {
            return Ok(self.scratch_dir(test_id));
        };
        if !finished {
            return Ok(self.scratch_dir(test_id));
        }
        let cache = self.inner.root.join(CACHE_DIR).join(test_id);
        if tokio::fs::metadata(&cache).await.is_ok_and(|m| m.is_dir()) {
            return Ok(cache);
        }
        let prefix = Self::bundle_prefix(remote, test_id);
        let objects = remote
            .s3
            .list_objects(&remote.bucket, &prefix)
            .await
            .map_err(StoreUnavailable)?;
        if objects.is_empty() {
            return Ok(cache);
        }
        let fetch = self
            .inner
            .root
            .join(CACHE_DIR)
            .join(format!(".fetch-{test_id}-{}", uuid_like_suffix()));
        let fetched = fetch_objects(remote, &objects, &prefix, &fetch).await;
        if let Err(err) = fetched {
            remove_dirs(vec![fetch]).await;
            return Err(err);
        }
        // Another reader may have fetched it meanwhile: its copy is as good as ours.
        if tokio::fs::rename(&fetch, &cache).await.is_err() {
            remove_dirs(vec![fetch]).await;
        }
        Ok(cache)
    }

    /// Deletes a scan's bundle: its stored objects, its scratch directory and its fetched copy.
    pub async fn delete_bundle(&self, test_id: &str) -> anyhow::Result<()> {
        remove_dirs(vec![
            self.scratch_dir(test_id),
            self.inner.root.join(CACHE_DIR).join(test_id),
        ])
        .await;
        let Some(remote) = &self.inner.remote else {
            return Ok(());
        };
        let keys: Vec<String> = remote
            .s3
            .list_objects(&remote.bucket, &Self::bundle_prefix(remote, test_id))
            .await
            .map_err(StoreUnavailable)?
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        if !keys.is_empty() {
            remote
                .s3
                .delete_objects(&remote.bucket, &keys)
                .await
                .map_err(StoreUnavailable)?;
        }
        Ok(())
    }

    /// Publishes an archive `upload-archive` stored as `<upload_dir>/<name>`.
    pub async fn publish_archive(&self, name: &str) -> anyhow::Result<()> {
        let Some(remote) = &self.inner.remote else {
            return Ok(());
        };
        put_file(
            remote,
            &self.inner.upload_dir.join(name),
            &Self::archive_key(remote, name),
        )
        .await
    }

    /// Whether the archive `<name>` is stored: in this replica's `<upload_dir>`, or (s3 backend)
    /// in the bucket, where another replica may have put it. Reads no archive bytes.
    pub async fn archive_stored(&self, name: &str) -> anyhow::Result<bool> {
        let local = self.inner.upload_dir.join(name);
        if tokio::fs::metadata(&local).await.is_ok_and(|m| m.is_file()) {
            return Ok(true);
        }
        let Some(remote) = &self.inner.remote else {
            return Ok(false);
        };
        match remote
            .s3
            .head_object(&remote.bucket, &Self::archive_key(remote, name))
            .await
        {
            Ok(found) => Ok(found.is_some()),
            Err(err) => Err(StoreUnavailable(err).into()),
        }
    }

    /// Makes sure the archive `<name>` is in `<upload_dir>`, fetching it from the store when
    /// another replica received it. Returns false when it is stored nowhere.
    pub async fn fetch_archive(&self, name: &str) -> anyhow::Result<bool> {
        let local = self.inner.upload_dir.join(name);
        if tokio::fs::metadata(&local).await.is_ok_and(|m| m.is_file()) {
            return Ok(true);
        }
        let Some(remote) = &self.inner.remote else {
            return Ok(false);
        };
        tokio::fs::create_dir_all(&self.inner.upload_dir)
            .await
            .context("creating the archive directory")?;
        // Named like a partial upload, so a start-up removes it if this process dies meanwhile.
        let part = self
            .inner
            .upload_dir
            .join(format!(".upload-fetch-{}.part", uuid_like_suffix()));
        let got = remote
            .s3
            .get_object_to_file(&remote.bucket, &Self::archive_key(remote, name), &part)
            .await;
        match got {
            Ok(Some(_)) => {
                tokio::fs::rename(&part, &local)
                    .await
                    .context("moving a fetched archive into place")?;
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(err) => {
                let _ = tokio::fs::remove_file(&part).await;
                Err(StoreUnavailable(err).into())
            }
        }
    }

    /// Deletes the archive `<name>`: the local file and the stored object.
    pub async fn delete_archive(&self, name: &str) -> anyhow::Result<()> {
        let file = self.inner.upload_dir.join(name);
        if let Err(err) = tokio::fs::remove_file(&file).await {
            if err.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %file.display(), error = %err, "could not remove a pruned archive");
            }
        }
        let Some(remote) = &self.inner.remote else {
            return Ok(());
        };
        remote
            .s3
            .delete_objects(&remote.bucket, &[Self::archive_key(remote, name)])
            .await
            .map_err(StoreUnavailable)?;
        Ok(())
    }
}

/// A random suffix for temporary names.
fn uuid_like_suffix() -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the OS random source");
    hex::encode(bytes)
}

/// Downloads `objects` (keys under `prefix`) into `dir`, keeping their relative paths. A key
/// that is not a plain relative path is refused.
async fn fetch_objects(
    remote: &Remote,
    objects: &[(String, u64)],
    prefix: &str,
    dir: &Path,
) -> anyhow::Result<()> {
    for (key, _) in objects {
        let rel = key.strip_prefix(prefix).unwrap_or(key);
        if !super::valid_key_path(rel) {
            anyhow::bail!("the stored bundle holds an object with an unusable name: {key}");
        }
        let dest = dir.join(rel);
        let parent = dest.parent().expect("a file below the directory");
        tokio::fs::create_dir_all(parent)
            .await
            .with_context(|| format!("creating {}", parent.display()))?;
        // A file deleted between the listing and now is left out.
        remote
            .s3
            .get_object_to_file(&remote.bucket, key, &dest)
            .await
            .map_err(StoreUnavailable)?;
    }
    Ok(())
}

/// Removes directories on the blocking pool; a missing one is fine, a failure is logged.
async fn remove_dirs(dirs: Vec<PathBuf>) {
    let _ = tokio::task::spawn_blocking(move || {
        for dir in dirs {
            if let Err(err) = std::fs::remove_dir_all(&dir) {
                if err.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %dir.display(), error = %err, "could not remove a bundle directory");
                }
            }
        }
    })
    .await;
}

/// Uploads one local file as one object (S3 checks its sha256), in parts when it is large.
/// The object carries its sha256 as metadata, which the Trust/S3 upload checks after a copy.
async fn put_file(remote: &Remote, path: &Path, key: &str) -> anyhow::Result<()> {
    let owned = path.to_path_buf();
    let (size, sha256_hex) = tokio::task::spawn_blocking(move || hash_file(&owned))
        .await
        .context("hashing a file stopped")?
        .with_context(|| format!("reading {} to store it", path.display()))?;
    let metadata = HashMap::from([("sha256".to_string(), sha256_hex.clone())]);
    let content_type = content_type(key);
    let s3 = &remote.s3;
    let bucket = &remote.bucket;
    if size <= PART_BYTES {
        let body = tokio::fs::read(path)
            .await
            .with_context(|| format!("reading {}", path.display()))?;
        if hex::encode(Sha256::digest(&body)) != sha256_hex {
            anyhow::bail!("{} changed while it was being stored", path.display());
        }
        let sha256_b64 = B64.encode(hex::decode(&sha256_hex).expect("hex of a digest"));
        s3.put_object(bucket, key, body, &sha256_b64, content_type, &metadata)
            .await
            .map_err(StoreUnavailable)?;
        return Ok(());
    }
    let upload_id = s3
        .create_multipart_upload(bucket, key, content_type, &metadata)
        .await
        .map_err(StoreUnavailable)?;
    let sent = put_parts(remote, path, key, &upload_id).await;
    let completed = match sent {
        Ok(parts) => s3
            .complete_multipart_upload(bucket, key, &upload_id, &parts)
            .await
            .map_err(|e| anyhow::Error::from(StoreUnavailable(e))),
        Err(err) => Err(err),
    };
    if completed.is_err() {
        if let Err(err) = s3.abort_multipart_upload(bucket, key, &upload_id).await {
            tracing::warn!(error = %err, "could not abort a multipart upload of the artifact store");
        }
    }
    completed
}

/// Sends a file's parts in order.
async fn put_parts(
    remote: &Remote,
    path: &Path,
    key: &str,
    upload_id: &str,
) -> anyhow::Result<Vec<super::object_store::UploadedPart>> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut parts = Vec::new();
    loop {
        let (back, bytes) = tokio::task::spawn_blocking(move || {
            let mut bytes = Vec::with_capacity(PART_BYTES as usize);
            let read = (&mut file).take(PART_BYTES).read_to_end(&mut bytes);
            read.map(|_| (file, bytes))
        })
        .await
        .context("reading a part stopped")?
        .with_context(|| format!("reading {}", path.display()))?;
        file = back;
        if bytes.is_empty() && !parts.is_empty() {
            return Ok(parts);
        }
        let last = (bytes.len() as u64) < PART_BYTES;
        let sha = B64.encode(Sha256::digest(&bytes));
        let number = parts.len() as i32 + 1;
        parts.push(
            remote
                .s3
                .upload_part(&remote.bucket, key, upload_id, number, bytes, sha)
                .await
                .map_err(StoreUnavailable)?,
        );
        if last {
            return Ok(parts);
        }
    }
}

/// Size and hex sha256 of a file.
fn hash_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let size = std::io::copy(&mut file, &mut hasher)?;
    Ok((size, hex::encode(hasher.finalize())))
}
