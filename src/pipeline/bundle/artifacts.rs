//! The artifact bundle as files: where each one goes, writing them atomically, making a sealed
//! bundle durable with one concurrent flush, and listing what a bundle holds. Plain data and
//! file I/O only; runs on the blocking pool.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// Relative paths of the bundle files this pipeline writes.
pub const SCAN_JSON: &str = "scan.json";
pub const SUMMARY_JSON: &str = "summary.json";
pub const RUNNER_LOG: &str = "logs/runner.log";
pub const STREAM_JSONL: &str = "stream.jsonl";

/// `reports/sast/<scanner>.sarif.json`
pub fn sarif_path(scanner: &str) -> String {
    format!("reports/sast/{scanner}.sarif.json")
}

/// Writes pretty JSON to `dir/rel` through a temporary file and a rename, so a reader never
/// sees a half-written file. The JSON is serialised in memory and written with one call.
///
/// Not flushed to the disk here: a bundle is made durable once, by [`make_durable`], when the
/// bundle is sealed. Until then nothing in it is promised: a scan interrupted before its outcome
/// is recorded is never reported SUCCEEDED, and a re-run starts from a clean bundle; files written
/// and then rewritten during the run (the scanners' SARIF logs, which the merge scrubs) need no
/// flush of their first version.
pub fn write_json(dir: &Path, rel: &str, value: &serde_json::Value) -> anyhow::Result<()> {
    let path = dir.join(rel);
    let parent = path.parent().expect("bundle paths have a parent");
    fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let mut bytes = serde_json::to_vec_pretty(value).with_context(|| format!("writing {rel}"))?;
    bytes.push(b'\n');
    let tmp = path.with_extension("tmp");
    let written = (|| -> anyhow::Result<()> {
        let mut file = fs::File::create(&tmp).with_context(|| format!("creating {rel}"))?;
        file.write_all(&bytes)
            .with_context(|| format!("writing {rel}"))?;
        fs::rename(&tmp, &path).with_context(|| format!("renaming {rel} into place"))
    })();
    if written.is_err() {
        // A half-written file (a full disk) would hold on to the space it took.
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// Flushes the sealed bundle to the disk: the data of every file in `files` (relative to `dir`)
/// and every directory holding them, the bundle directory's own entry included. Called once,
/// after the attestation is written and before the outcome is recorded: a SUCCEEDED scan promises
/// every file its attestation lists, so they must survive a power loss that the stored outcome
/// survives.
///
/// The flushes run concurrently, one thread each: the file system then commits them together
/// (on ext4 one journal commit and one device flush for the whole bundle, where one flush after
/// the other costs a device flush each).
pub fn make_durable(dir: &Path, files: &[String]) -> anyhow::Result<()> {
    let mut targets: Vec<PathBuf> = files.iter().map(|rel| dir.join(rel)).collect();
    let mut dirs: Vec<PathBuf> = files
        .iter()
        .filter_map(|rel| dir.join(rel).parent().map(Path::to_path_buf))
        .collect();
    dirs.push(dir.to_path_buf());
    if let Some(parent) = dir.parent() {
        dirs.push(parent.to_path_buf());
    }
    dirs.sort();
    dirs.dedup();
    targets.extend(dirs);
    let results: Vec<anyhow::Result<()>> = std::thread::scope(|scope| {
        let handles: Vec<_> = targets
            .iter()
            .map(|path| scope.spawn(move || flush(path)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a flush thread panicked")))
            })
            .collect()
    });
    results.into_iter().collect()
}

/// `fdatasync` of one file, or `fsync` of one directory (its entries).
fn flush(path: &Path) -> anyhow::Result<()> {
    let shown = || {
        path.file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned()
    };
    let file = fs::File::open(path).with_context(|| format!("opening {} to flush it", shown()))?;
    if path.is_dir() {
        file.sync_all()
    } else {
        file.sync_data()
    }
    .with_context(|| format!("flushing {} to the disk", shown()))
}

/// Every regular file under `dir`, as sorted relative paths with `/` separators.
pub fn list_files(dir: &Path) -> anyhow::Result<Vec<String>> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> anyhow::Result<()> {
        for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
            let entry = entry?;
            let kind = entry.file_type()?;
            let path: PathBuf = entry.path();
            if kind.is_dir() {
                walk(root, &path, out)?;
            } else if kind.is_file() {
                let rel = path.strip_prefix(root).expect("walk stays under root");
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    if dir.exists() {
        walk(dir, dir, &mut out)?;
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_lists_bundle_files() {
        let dir = tempfile::tempdir().unwrap();
        write_json(
            dir.path(),
            &sarif_path("secrets"),
            &serde_json::json!({"a": 1}),
        )
        .unwrap();
        write_json(dir.path(), SUMMARY_JSON, &serde_json::json!({})).unwrap();
        assert_eq!(
            list_files(dir.path()).unwrap(),
            vec!["reports/sast/secrets.sarif.json", "summary.json"]
        );
    }

    #[test]
    fn makes_every_file_and_directory_of_a_bundle_durable() {
        let root = tempfile::tempdir().unwrap();
        let bundle = root.path().join("test_0123456789ab");
        write_json(
            &bundle,
            &sarif_path("secrets"),
            &serde_json::json!({"a": 1}),
        )
        .unwrap();
        write_json(&bundle, SUMMARY_JSON, &serde_json::json!({})).unwrap();
        let files = list_files(&bundle).unwrap();
        make_durable(&bundle, &files).unwrap();
        let err = make_durable(&bundle, &["reports/gone.json".to_string()]).unwrap_err();
        assert!(
            format!("{err:#}").contains("opening gone.json to flush it"),
            "{err:#}"
        );
    }
}
