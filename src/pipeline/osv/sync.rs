//! `certus-assurance osv sync`: keeps the OSV database directory current from osv.dev's
//! per-ecosystem exports (`<source>/<Ecosystem>/all.zip`).
//!
//! For each ecosystem: a conditional `GET` (`If-None-Match` / `If-Modified-Since` from the state
//! recorded by the previous sync); on `304` only the state's `checked_at` moves; on `200` the body
//! is streamed to a temporary file in the ecosystem's directory (same filesystem), checked
//! (a readable zip of at most [`Limits::max_entries`] entries, each JSON entry an OSV record with
//! `id` and `modified`, at most [`Limits::max_entry_bytes`] each), flushed to disk and renamed
//! over `all.zip`; the directory is flushed too. A download or check that fails leaves the
//! previous `all.zip` and its state untouched. Ecosystems are independent: one failing does not
//! stop the others, and the command exits 1 if any failed.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::pipeline::sbom::Ecosystem;

/// Where osv.dev publishes its exports.
pub const DEFAULT_SOURCE_URL: &str = "https://osv-vulnerabilities.storage.googleapis.com";
/// The export's file name inside `<OSV_DB_DIR>/<Ecosystem>/`.
pub const ZIP_FILE: &str = "all.zip";
/// The sync state beside it (JSON; not a `.json` name, so the loader does not read it as a record).
pub const STATE_FILE: &str = "all.zip.state";
/// Held (`flock`) by the sync writing a directory.
const LOCK_FILE: &str = ".osv-sync.lock";
/// Prefix and suffix of the temporary files of a sync in progress (not read by the loader).
const TEMP_PREFIX: &str = ".all.zip.";
const TEMP_SUFFIX: &str = ".part";

/// Caps on what a download may be.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest `all.zip` accepted.
    pub max_bytes: u64,
    /// Most entries in the zip.
    pub max_entries: usize,
    /// Largest single record, uncompressed.
    pub max_entry_bytes: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_bytes: 2 * 1024 * 1024 * 1024,
            max_entries: 2_000_000,
            max_entry_bytes: 16 * 1024 * 1024,
        }
    }
}

/// What the previous sync of an ecosystem recorded (`<Ecosystem>/all.zip.state`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncState {
    /// The URL downloaded.
    pub url: String,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// Unix time of the download that produced `all.zip`.
    pub downloaded_at: u64,
    /// Unix time the source last confirmed the data current (a download or a `304`).
    pub checked_at: u64,
    /// OSV records in `all.zip`.
    pub records: usize,
    pub bytes: u64,
    /// Hex sha256 of `all.zip`.
    pub sha256: String,
}

impl SyncState {
    /// The state of `eco` under `db_dir`, if a sync wrote one and its `all.zip` is there.
    pub fn read(db_dir: &Path, eco: Ecosystem) -> Option<SyncState> {
        let dir = db_dir.join(eco.osv_name());
        if !dir.join(ZIP_FILE).is_file() {
            return None;
        }
        let text = std::fs::read(dir.join(STATE_FILE)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// When the data was last confirmed current.
    pub fn confirmed_time(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.checked_at)
    }

    fn write(&self, dir: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_vec_pretty(self).expect("the state serialises");
        let tmp = dir.join(format!(
            "{TEMP_PREFIX}state.{}{TEMP_SUFFIX}",
            std::process::id()
        ));
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&text)?;
            f.sync_all()?;
            std::fs::rename(&tmp, dir.join(STATE_FILE))?;
            sync_dir(dir)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.with_context(|| format!("writing {}", dir.join(STATE_FILE).display()))
    }
}

/// What one ecosystem's sync did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A new export was downloaded, checked and swapped in.
    Updated { records: usize, bytes: u64 },
    /// The source answered `304`: the data on disk is current.
    NotModified,
    /// Nothing changed on disk; the message says what went wrong and what to do.
    Failed(String),
}

/// Parses `--ecosystems` (OSV spelling, case-insensitive); empty means all.
pub fn parse_ecosystems(names: &[String]) -> anyhow::Result<Vec<Ecosystem>> {
    let mut out = Vec::new();
    for name in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        let eco = Ecosystem::ALL
            .into_iter()
            .find(|e| e.osv_name().eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "--ecosystems: unknown ecosystem `{name}`; the vulnerability scanner supports {}",
                    supported()
                )
            })?;
        if !out.contains(&eco) {
            out.push(eco);
        }
    }
    if out.is_empty() {
        out = Ecosystem::ALL.to_vec();
    }
    Ok(out)
}

fn supported() -> String {
    Ecosystem::ALL
        .iter()
        .map(|e| e.osv_name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `osv sync` command: exit code 0, 1 (an ecosystem failed) or 2 (bad arguments).
pub fn main(
    ecosystems: &[String],
    db_dir: Option<PathBuf>,
    source_text: &str,
    timeout_seconds: u64,
) -> std::process::ExitCode {
    let prepared = (|| {
        let ecosystems = parse_ecosystems(ecosystems)?;
        let db_dir = db_dir.ok_or_else(|| {
                anyhow::anyhow!(
                    "no database directory: set CERTUS_ASSURANCE_OSV_DB_DIR (the directory the service reads) or pass --db-dir DIR"
                )
            })?;
        let source = source_url(source_text)?;
        if timeout_seconds == 0 {
            bail!("--timeout-seconds must be greater than 0");
        }
        std::fs::create_dir_all(&db_dir).with_context(|| {
            format!(
                "creating the OSV database directory {}; check that the parent exists and is writable",
                db_dir.display()
            )
        })?;
        anyhow::Ok((ecosystems, db_dir, source))
    })();
    let (ecosystems, db_dir, source) = match prepared {
        Ok(p) => p,
        Err(err) => {
            eprintln!("certus-assurance osv sync: {err:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("certus-assurance osv sync: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let timeout = Duration::from_secs(timeout_seconds);
    let results = runtime.block_on(sync(
        &db_dir,
        &source,
        &ecosystems,
        timeout,
        Limits::default(),
    ));
    let mut failed = false;
    for (eco, outcome) in &results {
        let name = eco.osv_name();
        match outcome {
            Outcome::Updated { records, bytes } => {
                println!("{name}: updated ({records} records, {bytes} bytes)")
            }
            Outcome::NotModified => println!("{name}: not modified (already current)"),
            Outcome::Failed(why) => {
                failed = true;
                println!("{name}: FAILED, previous data kept");
                eprintln!("certus-assurance osv sync: {name}: {why}");
            }
        }
    }
    std::process::ExitCode::from(if failed { 1 } else { 0 })
}

/// `CERTUS_ASSURANCE_OSV_SOURCE_URL` checked and without its trailing `/`.
pub fn source_url(text: &str) -> anyhow::Result<String> {
    let url = reqwest::Url::parse(text.trim()).with_context(|| {
        format!("CERTUS_ASSURANCE_OSV_SOURCE_URL: `{text}` is not a URL (default: {DEFAULT_SOURCE_URL})")
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        bail!("CERTUS_ASSURANCE_OSV_SOURCE_URL: `{text}` must be an http(s) URL with a host (default: {DEFAULT_SOURCE_URL})");
    }
    if !url.username().is_empty() || url.password().is_some() || url.query().is_some() {
        bail!("CERTUS_ASSURANCE_OSV_SOURCE_URL must not carry credentials or a query (it is printed in messages and recorded in the sync state)");
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// Syncs each ecosystem in turn; one failing does not stop the others.
pub async fn sync(
    db_dir: &Path,
    source: &str,
    ecosystems: &[Ecosystem],
    timeout: Duration,
    limits: Limits,
) -> Vec<(Ecosystem, Outcome)> {
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .read_timeout(Duration::from_secs(60))
        .user_agent(concat!("certus-assurance/", env!("CARGO_PKG_VERSION")))
        .build();
    let client = match client {
        Ok(c) => c,
        Err(err) => {
            let why = format!("cannot build the HTTP client: {err}");
            return ecosystems
                .iter()
                .map(|e| (*e, Outcome::Failed(why.clone())))
                .collect();
        }
    };
    // One sync per directory at a time: a second one would delete the first one's temporary
    // files as leftovers. The lock goes with the process, however it ends.
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(db_dir.join(LOCK_FILE))
        .map_err(|e| {
            format!(
                "cannot open {}: {e}; check that the directory is writable",
                db_dir.join(LOCK_FILE).display()
            )
        })
        .and_then(|f| match try_lock(&f) {
            Ok(true) => Ok(f),
            Ok(false) => Err(format!(
                "another `osv sync` is writing {}; let it finish (nothing was changed)",
                db_dir.display()
            )),
            Err(e) => Err(format!(
                "cannot lock {}: {e}",
                db_dir.join(LOCK_FILE).display()
            )),
        });
    let _lock = match lock {
        Ok(f) => f,
        Err(why) => {
            return ecosystems
                .iter()
                .map(|e| (*e, Outcome::Failed(why.clone())))
                .collect();
        }
    };
    let mut out = Vec::new();
    for &eco in ecosystems {
        let outcome = match sync_one(&client, db_dir, source, eco, timeout, limits).await {
            Ok(o) => o,
            Err(err) => Outcome::Failed(format!("{err:#}")),
        };
        out.push((eco, outcome));
    }
    out
}

async fn sync_one(
    client: &reqwest::Client,
    db_dir: &Path,
    source: &str,
    eco: Ecosystem,
    timeout: Duration,
    limits: Limits,
) -> anyhow::Result<Outcome> {
    let dir = db_dir.join(eco.osv_name());
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    remove_leftovers(&dir);
    let url = format!("{source}/{}/{ZIP_FILE}", eco.osv_name());
    // Conditional only when the data it describes is still there and came from the same URL.
    let previous = SyncState::read(db_dir, eco).filter(|s| s.url == url);
    let mut request = client.get(&url).timeout(timeout);
    if let Some(prev) = &previous {
        if let Some(etag) = &prev.etag {
            request = request.header(reqwest::header::IF_NONE_MATCH, etag);
        }
        if let Some(lm) = &prev.last_modified {
            request = request.header(reqwest::header::IF_MODIFIED_SINCE, lm);
        }
    }
    let mut response = request.send().await.map_err(|err| {
        anyhow::anyhow!(
            "downloading {url} failed: {}; check the network and CERTUS_ASSURANCE_OSV_SOURCE_URL, then run the sync again",
            describe(&err)
        )
    })?;
    let status = response.status();
    if status == reqwest::StatusCode::NOT_MODIFIED {
        let Some(mut state) = previous else {
            bail!("{url} answered 304 Not Modified to an unconditional request; the source is misbehaving, check CERTUS_ASSURANCE_OSV_SOURCE_URL");
        };
        state.checked_at = unix_now();
        state.write(&dir)?;
        return Ok(Outcome::NotModified);
    }
    if !status.is_success() {
        bail!(
            "{url} answered {status}; check that CERTUS_ASSURANCE_OSV_SOURCE_URL points at the osv.dev export layout (<base>/<Ecosystem>/all.zip)"
        );
    }
    if let Some(len) = response.content_length() {
        if len > limits.max_bytes {
            bail!(
                "{url} is {len} bytes, above the {} bytes a sync accepts; this is not an osv.dev export",
                limits.max_bytes
            );
        }
    }
    let header = |name: reqwest::header::HeaderName| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let etag = header(reqwest::header::ETAG);
    let last_modified = header(reqwest::header::LAST_MODIFIED);

    let tmp = dir.join(format!("{TEMP_PREFIX}{}{TEMP_SUFFIX}", std::process::id()));
    let result = download_verified(&mut response, &url, &dir, &tmp, eco, limits).await;
    let (records, bytes, sha256) = match result {
        Ok(r) => r,
        Err(err) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(err);
        }
    };
    let now = unix_now();
    SyncState {
        url,
        etag,
        last_modified,
        downloaded_at: now,
        checked_at: now,
        records,
        bytes,
        sha256,
    }
    .write(&dir)?;
    Ok(Outcome::Updated { records, bytes })
}

/// Streams the export into `tmp` (capped at the limit, hashed as it is written), checks it, and
/// moves it into `dir`; returns its records, size and sha256.
async fn download_verified(
    response: &mut reqwest::Response,
    url: &str,
    dir: &Path,
    tmp: &Path,
    eco: Ecosystem,
    limits: Limits,
) -> anyhow::Result<(usize, u64, String)> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(tmp)
        .with_context(|| {
            format!(
                "creating {}; check that the directory is writable",
                tmp.display()
            )
        })?;
    let mut hasher = Sha256::new();
    let mut bytes: u64 = 0;
    loop {
        let chunk = response.chunk().await.map_err(|err| {
            anyhow::anyhow!(
                "downloading {url} failed after {bytes} bytes: {}; run the sync again",
                describe(&err)
            )
        })?;
        let Some(chunk) = chunk else { break };
        bytes += chunk.len() as u64;
        if bytes > limits.max_bytes {
            bail!(
                "{url} is larger than the {} bytes a sync accepts; this is not an osv.dev export",
                limits.max_bytes
            );
        }
        hasher.update(&chunk);
        file.write_all(&chunk)
            .with_context(|| format!("writing {}; is the disk full?", tmp.display()))?;
    }
    file.sync_all()
        .with_context(|| format!("flushing {} to disk", tmp.display()))?;
    drop(file);
    let check = tmp.to_path_buf();
    let records = tokio::task::spawn_blocking(move || verify_zip(&check, eco, limits))
        .await
        .context("the check of the download stopped")?
        .with_context(|| format!("the download of {url} is not a usable OSV export; the previous data is kept, run the sync again later"))?;
    std::fs::rename(tmp, dir.join(ZIP_FILE))
        .with_context(|| format!("moving the download into {}", dir.display()))?;
    sync_dir(dir).with_context(|| format!("flushing {}", dir.display()))?;
    Ok((records, bytes, hex::encode(hasher.finalize())))
}

/// The fields every OSV record has (schema: `id` and `modified` are required).
#[derive(Deserialize)]
struct RecordHead {
    id: String,
    modified: String,
    #[serde(default)]
    affected: Vec<AffectedHead>,
}

#[derive(Deserialize)]
struct AffectedHead {
    #[serde(default)]
    package: Option<PackageHead>,
}

#[derive(Deserialize)]
struct PackageHead {
    ecosystem: String,
}

/// Checks a downloaded export: a zip within the caps whose every `.json` entry is an OSV record
/// (with an `id`, a valid `modified` and, if it names packages, some of `eco`). Returns the
/// number of records.
pub fn verify_zip(path: &Path, eco: Ecosystem, limits: Limits) -> anyhow::Result<usize> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .context("it is not a readable zip file")?;
    if zip.len() > limits.max_entries {
        bail!(
            "it has {} entries, more than the {} a sync accepts",
            zip.len(),
            limits.max_entries
        );
    }
    let mut records = 0;
    let mut buf = Vec::new();
    for i in 0..zip.len() {
        let mut entry = zip
            .by_index(i)
            .with_context(|| format!("entry {i} is unreadable"))?;
        if !entry.is_file() || !entry.name().ends_with(".json") {
            continue;
        }
        let name = entry.name().to_string();
        if entry.size() > limits.max_entry_bytes {
            bail!(
                "entry {name} is {} bytes, above the {} bytes of a record",
                entry.size(),
                limits.max_entry_bytes
            );
        }
        buf.clear();
        (&mut entry)
            .take(limits.max_entry_bytes + 1)
            .read_to_end(&mut buf)
            .with_context(|| format!("entry {name} is unreadable"))?;
        if buf.len() as u64 > limits.max_entry_bytes {
            bail!(
                "entry {name} is above the {} bytes of a record",
                limits.max_entry_bytes
            );
        }
        let head: RecordHead = serde_json::from_slice(&buf)
            .with_context(|| format!("entry {name} is not an OSV record"))?;
        if head.id.trim().is_empty() {
            bail!("entry {name} is an OSV record without an id");
        }
        if super::parse_timestamp(&head.modified).is_none() {
            bail!(
                "entry {name} ({}) has an unreadable `modified` time",
                head.id
            );
        }
        let names: Vec<&str> = head
            .affected
            .iter()
            .filter_map(|a| Some(a.package.as_ref()?.ecosystem.as_str()))
            .collect();
        // Records name the ecosystem as `PyPI` or with a suffix (`Debian:11`); the export of one
        // ecosystem holds records of that ecosystem.
        if !names.is_empty()
            && !names
                .iter()
                .any(|n| n.split(':').next() == Some(eco.osv_name()))
        {
            bail!(
                "entry {name} ({}) is a record of {} , not of {}; check CERTUS_ASSURANCE_OSV_SOURCE_URL",
                head.id,
                names.join(", "),
                eco.osv_name()
            );
        }
        records += 1;
    }
    if records == 0 {
        bail!("it holds no OSV records");
    }
    Ok(records)
}

/// Takes an exclusive `flock` on `file` without waiting: `Ok(false)` when another process holds
/// it. Released when the file is closed, however the process ends.
fn try_lock(file: &std::fs::File) -> std::io::Result<bool> {
    #[cfg(unix)]
    {
        use std::os::unix::io::AsRawFd;
        // SAFETY: flock only reads the descriptor, which `file` keeps open during the call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(true);
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Ok(false);
        }
        Err(err)
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        Ok(true)
    }
}

/// Removes temporary files a sync that was killed left behind.
fn remove_leftovers(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(TEMP_PREFIX) && name.ends_with(TEMP_SUFFIX) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Flushes a directory's entries (the rename) to disk.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A transport error in words, with its cause chain (reqwest's top-level message is terse).
fn describe(err: &reqwest::Error) -> String {
    let mut text = if err.is_timeout() {
        "timed out (see --timeout-seconds)".to_string()
    } else if err.is_connect() {
        "could not connect".to_string()
    } else {
        err.to_string()
    };
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn write_zip(path: &Path, entries: &[(&str, String)]) {
        let f = std::fs::File::create(path).unwrap();
        let mut zip = zip::ZipWriter::new(f);
        for (name, text) in entries {
            zip.start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            zip.write_all(text.as_bytes()).unwrap();
        }
        zip.finish().unwrap();
    }

    fn record(id: &str, eco: &str) -> String {
        json!({"schema_version": "1.6.0", "id": id, "modified": "2026-11-30T10:00:00.123456Z",
            "affected": [{"package": {"ecosystem": eco, "name": "flask"}, "versions": ["0.12"]}]})
        .to_string()
    }

    #[test]
    fn verify_accepts_an_export_and_refuses_what_is_not_one() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.zip");
        let limits = Limits::default();
        write_zip(
            &p,
            &[
                ("PYSEC-1.json", record("PYSEC-1", "PyPI")),
                ("GHSA-2.json", record("GHSA-2", "PyPI")),
            ],
        );
        assert_eq!(verify_zip(&p, Ecosystem::PyPI, limits).unwrap(), 2);

        let err = verify_zip(&p, Ecosystem::Npm, limits).unwrap_err();
        assert!(format!("{err:#}").contains("not of npm"), "{err:#}");

        let tight = Limits {
            max_entries: 1,
            ..limits
        };
        let err = verify_zip(&p, Ecosystem::PyPI, tight).unwrap_err();
        assert!(format!("{err:#}").contains("2 entries"), "{err:#}");

        let small = Limits {
            max_entry_bytes: 20,
            ..limits
        };
        let err = verify_zip(&p, Ecosystem::PyPI, small).unwrap_err();
        assert!(format!("{err:#}").contains("bytes of a record"), "{err:#}");

        write_zip(&p, &[("a.json", json!({"id": "X"}).to_string())]);
        let err = verify_zip(&p, Ecosystem::PyPI, limits).unwrap_err();
        assert!(format!("{err:#}").contains("not an OSV record"), "{err:#}");

        write_zip(&p, &[("README.txt", "hello".into())]);
        let err = verify_zip(&p, Ecosystem::PyPI, limits).unwrap_err();
        assert!(format!("{err:#}").contains("no OSV records"), "{err:#}");

        std::fs::write(&p, b"PK\x03\x04 truncated").unwrap();
        let err = verify_zip(&p, Ecosystem::PyPI, limits).unwrap_err();
        assert!(format!("{err:#}").contains("not a readable zip"), "{err:#}");
    }

    #[test]
    fn ecosystems_and_source_urls_are_checked() {
        assert_eq!(parse_ecosystems(&[]).unwrap(), Ecosystem::ALL.to_vec());
        assert_eq!(
            parse_ecosystems(&["pypi".into(), "NPM".into(), "PyPI".into()]).unwrap(),
            vec![Ecosystem::PyPI, Ecosystem::Npm]
        );
        let err = parse_ecosystems(&["Maven".into()]).unwrap_err().to_string();
        assert!(
            err.contains("Maven") && err.contains("crates.io, npm, PyPI, Go, RubyGems, Packagist")
        );

        assert_eq!(source_url(DEFAULT_SOURCE_URL).unwrap(), DEFAULT_SOURCE_URL);
        assert_eq!(
            source_url("http://127.0.0.1:8080/mirror/").unwrap(),
            "http://127.0.0.1:8080/mirror"
        );
        for bad in [
            "osv-vulnerabilities.storage.googleapis.com",
            "ftp://example.com",
            "https://user:pw@example.com",
        ] {
            assert!(source_url(bad).is_err(), "{bad}");
        }
        assert!(!format!(
            "{:#}",
            source_url("https://user:pw@example.com").unwrap_err()
        )
        .contains("pw@"));
    }

    #[tokio::test]
    async fn a_second_sync_of_one_directory_waits_for_none_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let held = std::fs::File::create(dir.path().join(LOCK_FILE)).unwrap();
        assert!(try_lock(&held).unwrap());
        // The source is never contacted: nothing listens on the port of this URL.
        let out = sync(
            dir.path(),
            "http://127.0.0.1:9",
            &[Ecosystem::PyPI],
            Duration::from_secs(5),
            Limits::default(),
        )
        .await;
        match &out[0].1 {
            Outcome::Failed(why) => assert!(why.contains("another `osv sync`"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(!dir.path().join("PyPI").exists());
    }

    #[test]
    fn state_is_read_only_beside_its_zip() {
        let dir = tempfile::tempdir().unwrap();
        let eco_dir = dir.path().join("PyPI");
        std::fs::create_dir_all(&eco_dir).unwrap();
        let state = SyncState {
            url: "http://x/PyPI/all.zip".into(),
            etag: Some("\"abc\"".into()),
            last_modified: None,
            downloaded_at: 1_700_000_000,
            checked_at: 1_700_000_100,
            records: 2,
            bytes: 10,
            sha256: "00".into(),
        };
        state.write(&eco_dir).unwrap();
        assert_eq!(SyncState::read(dir.path(), Ecosystem::PyPI), None);
        std::fs::write(eco_dir.join(ZIP_FILE), b"zip").unwrap();
        let read = SyncState::read(dir.path(), Ecosystem::PyPI).unwrap();
        assert_eq!(read, state);
        assert_eq!(
            read.confirmed_time(),
            UNIX_EPOCH + Duration::from_secs(1_700_000_100)
        );
        let leftovers: Vec<_> = std::fs::read_dir(&eco_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| n.ends_with(TEMP_SUFFIX))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}
