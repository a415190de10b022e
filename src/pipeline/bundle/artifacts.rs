//! The artifact bundle as files: where each one goes, writing them atomically, and listing what
//! a bundle holds. Plain data and file I/O only; runs on the blocking pool.

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
/// sees a half-written file.
pub fn write_json(dir: &Path, rel: &str, value: &serde_json::Value) -> anyhow::Result<()> {
    let path = dir.join(rel);
    let parent = path.parent().expect("bundle paths have a parent");
    fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let tmp = path.with_extension("tmp");
    let written = (|| -> anyhow::Result<()> {
        let mut file = fs::File::create(&tmp).with_context(|| format!("creating {rel}"))?;
        serde_json::to_writer_pretty(&mut file, value).with_context(|| format!("writing {rel}"))?;
        file.write_all(b"\n")
            .with_context(|| format!("writing {rel}"))?;
        file.sync_data()
            .with_context(|| format!("flushing {rel}"))?;
        fs::rename(&tmp, &path).with_context(|| format!("renaming {rel} into place"))
    })();
    if written.is_err() {
        // A half-written file (a full disk) would hold on to the space it took.
        let _ = fs::remove_file(&tmp);
    }
    written
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
}
