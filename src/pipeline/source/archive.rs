//! Uploaded archives: recognising the format from the content (not the name), and unpacking
//! safely. Extraction refuses absolute paths, `..` components, links whose target leaves the
//! tree and writing through a link, and stops at the total-size and file-count limits, so a
//! hostile archive cannot write outside its extraction directory or fill the disk. The same
//! walk runs without writing when an archive is uploaded, so most hostile archives are refused
//! before a scan is ever queued.

use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Formats accepted by `upload-archive`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    Tar,
    TarGz,
    TarBz2,
    Zip,
}

impl ArchiveFormat {
    /// File extension used for stored uploads.
    pub fn extension(self) -> &'static str {
        match self {
            ArchiveFormat::Tar => "tar",
            ArchiveFormat::TarGz => "tar.gz",
            ArchiveFormat::TarBz2 => "tar.bz2",
            ArchiveFormat::Zip => "zip",
        }
    }

    pub fn from_extension(ext: &str) -> Option<ArchiveFormat> {
        [
            ArchiveFormat::Tar,
            ArchiveFormat::TarGz,
            ArchiveFormat::TarBz2,
            ArchiveFormat::Zip,
        ]
        .into_iter()
        .find(|f| f.extension() == ext)
    }
}

/// Recognises an archive from its first bytes (at least 262 for plain tar).
pub fn sniff(head: &[u8]) -> Option<ArchiveFormat> {
    if head.starts_with(&[0x1f, 0x8b]) {
        Some(ArchiveFormat::TarGz)
    } else if head.starts_with(b"BZh") {
        Some(ArchiveFormat::TarBz2)
    } else if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        Some(ArchiveFormat::Zip)
    } else if head.len() >= 262 && &head[257..262] == b"ustar" {
        Some(ArchiveFormat::Tar)
    } else {
        None
    }
}

/// Extraction limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Total bytes of file content written (decompressed).
    pub max_bytes: u64,
    /// Entries (files, directories and links).
    pub max_entries: u64,
}

/// What a walk found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub files: u64,
    pub bytes: u64,
    pub entries: u64,
    /// Device files, FIFOs and other special entries that were not created.
    pub skipped_special: u64,
}

/// Why an archive was refused. The message names the entry and says what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{0}")]
    Refused(String),
    #[error("cancelled")]
    Cancelled,
    #[error("the archive could not be read: {0}")]
    Corrupt(String),
}

fn refused(msg: impl Into<String>) -> ArchiveError {
    ArchiveError::Refused(msg.into())
}

/// Checks an entry path: relative, no `..`, not empty. Returns the normalised relative path.
fn safe_path(name: &str) -> Result<PathBuf, ArchiveError> {
    if name.contains('\0') {
        return Err(refused(format!(
            "entry {name:?} has a NUL byte in its name"
        )));
    }
    if name.len() > 4096 {
        return Err(refused("an entry name is longer than 4096 bytes"));
    }
    let unified = name.replace('\\', "/");
    if unified.starts_with('/') || (unified.len() > 1 && unified.as_bytes()[1] == b':') {
        return Err(refused(format!(
            "entry {name:?} has an absolute path; archives must hold relative paths only"
        )));
    }
    let mut out = PathBuf::new();
    for comp in Path::new(&unified).components() {
        match comp {
            Component::Normal(c) => out.push(c),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(refused(format!(
                    "entry {name:?} contains `..`; archives must not reach outside their directory"
                )))
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(refused(format!("entry {name:?} has an absolute path")))
            }
        }
    }
    Ok(out)
}

/// Checks a link target relative to the link's directory: it must stay inside the tree.
fn check_link(
    entry: &Path,
    target: &str,
    what: &str,
    links: &std::collections::HashSet<PathBuf>,
) -> Result<PathBuf, ArchiveError> {
    let t = target.replace('\\', "/");
    if t.is_empty() || t.starts_with('/') || t.contains('\0') {
        return Err(refused(format!(
            "{what} {} points to {target:?}, outside the archive",
            entry.display()
        )));
    }
    let mut resolved: Vec<std::ffi::OsString> = entry
        .parent()
        .map(|p| p.iter().map(|c| c.to_os_string()).collect())
        .unwrap_or_default();
    for comp in Path::new(&t).components() {
        match comp {
            Component::Normal(c) => {
                resolved.push(c.to_os_string());
                let so_far: PathBuf = resolved.iter().collect();
                if links.contains(&so_far) {
                    return Err(refused(format!(
                        "{what} {} points through the link {}; links to links are not accepted",
                        entry.display(),
                        so_far.display()
                    )));
                }
            }
            Component::CurDir => {}
            Component::ParentDir => {
                if resolved.pop().is_none() {
                    return Err(refused(format!(
                        "{what} {} points to {target:?}, outside the archive",
                        entry.display()
                    )));
                }
            }
            _ => {
                return Err(refused(format!(
                    "{what} {} points to {target:?}, outside the archive",
                    entry.display()
                )))
            }
        }
    }
    Ok(resolved.iter().collect())
}

/// Where entries go: nowhere (inspection) or under a directory.
struct Writer<'a> {
    dest: Option<&'a Path>,
    /// Paths of the symbolic links seen so far.
    links: std::collections::HashSet<PathBuf>,
    /// Paths of the regular files seen so far.
    files: std::collections::HashSet<PathBuf>,
    limits: Limits,
    stats: Stats,
    cancel: &'a AtomicBool,
}

impl Writer<'_> {
    fn count_entry(&mut self) -> Result<(), ArchiveError> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(ArchiveError::Cancelled);
        }
        self.stats.entries += 1;
        if self.stats.entries > self.limits.max_entries {
            return Err(refused(format!(
                "the archive has more than {} entries (CERTUS_ASSURANCE_ARCHIVE_MAX_FILES)",
                self.limits.max_entries
            )));
        }
        Ok(())
    }

    /// Refuses to create `rel` if any existing ancestor inside the destination is a link.
    fn target(&self, rel: &Path) -> Result<Option<PathBuf>, ArchiveError> {
        let mut prefix = PathBuf::new();
        for c in rel.components() {
            prefix.push(c);
            if prefix != rel && self.links.contains(&prefix) {
                return Err(refused(format!(
                    "entry {} would be written through the link {}",
                    rel.display(),
                    prefix.display()
                )));
            }
        }
        let Some(dest) = self.dest else {
            return Ok(None);
        };
        let mut cur = dest.to_path_buf();
        let comps: Vec<_> = rel.components().collect();
        for (i, c) in comps.iter().enumerate() {
            cur.push(c);
            match std::fs::symlink_metadata(&cur) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(refused(format!(
                        "entry {} would be written through the link {}",
                        rel.display(),
                        comps[..=i].iter().collect::<PathBuf>().display()
                    )))
                }
                Ok(meta) if i + 1 == comps.len() && meta.is_dir() => {}
                _ => {}
            }
        }
        Ok(Some(cur))
    }

    fn dir(&mut self, rel: &Path) -> Result<(), ArchiveError> {
        self.count_entry()?;
        if let Some(path) = self.target(rel)? {
            std::fs::create_dir_all(&path)
                .map_err(|e| ArchiveError::Corrupt(format!("creating {}: {e}", rel.display())))?;
        }
        Ok(())
    }

    fn file(&mut self, rel: &Path, mut content: impl Read) -> Result<(), ArchiveError> {
        self.count_entry()?;
        self.stats.files += 1;
        if !self.files.insert(rel.to_path_buf()) || self.links.contains(rel) {
            return Err(refused(format!(
                "entry {} appears twice in the archive",
                rel.display()
            )));
        }
        let budget = self.limits.max_bytes - self.stats.bytes.min(self.limits.max_bytes);
        let mut limited = (&mut content).take(budget + 1);
        let written = match self.target(rel)? {
            Some(path) => {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| {
                        ArchiveError::Corrupt(format!("creating {}: {e}", rel.display()))
                    })?;
                }
                if std::fs::symlink_metadata(&path).is_ok() {
                    return Err(refused(format!(
                        "entry {} appears twice in the archive",
                        rel.display()
                    )));
                }
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(|e| {
                        ArchiveError::Corrupt(format!("creating {}: {e}", rel.display()))
                    })?;
                let n = std::io::copy(&mut limited, &mut file).map_err(|e| {
                    ArchiveError::Corrupt(format!("reading {}: {e}", rel.display()))
                })?;
                file.flush().ok();
                n
            }
            None => std::io::copy(&mut limited, &mut std::io::sink())
                .map_err(|e| ArchiveError::Corrupt(format!("reading {}: {e}", rel.display())))?,
        };
        self.stats.bytes += written;
        if self.stats.bytes > self.limits.max_bytes {
            return Err(refused(format!(
                "the archive unpacks to more than {} bytes (CERTUS_ASSURANCE_ARCHIVE_MAX_EXTRACTED_BYTES)",
                self.limits.max_bytes
            )));
        }
        Ok(())
    }

    fn symlink(&mut self, rel: &Path, target: &str) -> Result<(), ArchiveError> {
        self.count_entry()?;
        check_link(rel, target, "symbolic link", &self.links)?;
        let created = self.target(rel)?;
        self.links.insert(rel.to_path_buf());
        if let Some(path) = created {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| {
                    ArchiveError::Corrupt(format!("creating {}: {e}", rel.display()))
                })?;
            }
            std::os::unix::fs::symlink(target, &path)
                .map_err(|e| ArchiveError::Corrupt(format!("creating {}: {e}", rel.display())))?;
        }
        Ok(())
    }

    fn hardlink(&mut self, rel: &Path, target: &str) -> Result<(), ArchiveError> {
        self.count_entry()?;
        // A hard link names another entry of the archive by its path from the root.
        let source = safe_path(target).map_err(|_| {
            refused(format!(
                "hard link {} points to {target:?}, outside the archive",
                rel.display()
            ))
        })?;
        if !self.files.contains(&source) {
            return Err(refused(format!(
                "hard link {} points to {target:?}, which is not an earlier file of the archive",
                rel.display()
            )));
        }
        if !self.files.insert(rel.to_path_buf()) {
            return Err(refused(format!(
                "entry {} appears twice in the archive",
                rel.display()
            )));
        }
        if let (Some(path), Some(dest)) = (self.target(rel)?, self.dest) {
            let from = dest.join(&source);
            let meta = std::fs::symlink_metadata(&from).map_err(|_| {
                refused(format!(
                    "hard link {} points to {target:?}, which is not an earlier file of the archive",
                    rel.display()
                ))
            })?;
            if !meta.is_file() {
                return Err(refused(format!(
                    "hard link {} points to {target:?}, which is not a regular file",
                    rel.display()
                )));
            }
            self.target(&source)?;
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| {
                    ArchiveError::Corrupt(format!("creating {}: {e}", rel.display()))
                })?;
            }
            std::fs::hard_link(&from, &path)
                .map_err(|e| ArchiveError::Corrupt(format!("creating {}: {e}", rel.display())))?;
        }
        Ok(())
    }
}

fn open_tar(path: &Path, format: ArchiveFormat) -> std::io::Result<Box<dyn Read>> {
    let file = std::io::BufReader::new(std::fs::File::open(path)?);
    Ok(match format {
        ArchiveFormat::Tar => Box::new(file),
        ArchiveFormat::TarGz => Box::new(flate2::read::MultiGzDecoder::new(file)),
        ArchiveFormat::TarBz2 => Box::new(bzip2::read::MultiBzDecoder::new(file)),
        ArchiveFormat::Zip => unreachable!("zip is not a tar stream"),
    })
}

fn walk_tar(path: &Path, format: ArchiveFormat, w: &mut Writer<'_>) -> Result<(), ArchiveError> {
    let reader = open_tar(path, format).map_err(|e| ArchiveError::Corrupt(e.to_string()))?;
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .map_err(|e| ArchiveError::Corrupt(e.to_string()))?;
    for entry in entries {
        let entry = entry.map_err(|e| ArchiveError::Corrupt(e.to_string()))?;
        let raw_path = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw_path).into_owned();
        let rel = safe_path(&name)?;
        let kind = entry.header().entry_type();
        let link_target = || -> Result<String, ArchiveError> {
            entry
                .link_name_bytes()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .ok_or_else(|| refused(format!("link {name:?} has no target")))
        };
        use tar::EntryType as T;
        match kind {
            T::Directory => {
                if rel.as_os_str().is_empty() {
                    continue;
                }
                w.dir(&rel)?
            }
            T::Regular | T::Continuous | T::GNUSparse => {
                if rel.as_os_str().is_empty() {
                    return Err(refused("a file entry has an empty name"));
                }
                w.file(&rel, entry)?
            }
            T::Symlink => {
                let target = link_target()?;
                w.symlink(&rel, &target)?
            }
            T::Link => {
                let target = link_target()?;
                w.hardlink(&rel, &target)?
            }
            // Metadata records of pax and GNU tar are consumed by the tar crate itself.
            T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink => {}
            _ => {
                w.count_entry()?;
                w.stats.skipped_special += 1;
            }
        }
    }
    Ok(())
}

/// The number of entries the zip's end-of-central-directory record declares (the ZIP64 record's
/// when the classic one says 0xFFFF), or `None` when it cannot be read. The zip reader indexes
/// entries by name, so two entries with one name are seen as one; comparing with this count is
/// how a duplicate is found (tar archives are refused for the same thing).
fn declared_zip_entries(path: &Path) -> Option<u64> {
    use std::io::{Seek, SeekFrom};
    let mut file = std::fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    // The record is 22 bytes plus a comment of at most 65,535 bytes, at the end of the file.
    let tail_len = len.min(22 + 65_535);
    file.seek(SeekFrom::Start(len - tail_len)).ok()?;
    let mut tail = vec![0u8; tail_len as usize];
    file.read_exact(&mut tail).ok()?;
    let at = tail
        .windows(4)
        .rposition(|w| w == [0x50, 0x4b, 0x05, 0x06])?;
    let record = tail.get(at..at + 22)?;
    let total = u16::from_le_bytes([record[10], record[11]]);
    if total != 0xFFFF {
        return Some(u64::from(total));
    }
    // ZIP64: the locator (20 bytes, just before the record) points at the ZIP64 record.
    let locator = tail.get(at.checked_sub(20)?..at)?;
    if locator[..4] != [0x50, 0x4b, 0x06, 0x07] {
        return None;
    }
    let offset = u64::from_le_bytes(locator[8..16].try_into().ok()?);
    file.seek(SeekFrom::Start(offset)).ok()?;
    let mut zip64 = [0u8; 56];
    file.read_exact(&mut zip64).ok()?;
    if zip64[..4] != [0x50, 0x4b, 0x06, 0x06] {
        return None;
    }
    Some(u64::from_le_bytes(zip64[32..40].try_into().ok()?))
}

fn walk_zip(path: &Path, w: &mut Writer<'_>) -> Result<(), ArchiveError> {
    let file = std::fs::File::open(path).map_err(|e| ArchiveError::Corrupt(e.to_string()))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| ArchiveError::Corrupt(e.to_string()))?;
    if declared_zip_entries(path).is_some_and(|declared| declared > zip.len() as u64) {
        return Err(refused(
            "an entry appears twice in the archive (two entries share one name)",
        ));
    }
    if zip.len() as u64 > w.limits.max_entries {
        return Err(refused(format!(
            "the archive has more than {} entries (CERTUS_ASSURANCE_ARCHIVE_MAX_FILES)",
            w.limits.max_entries
        )));
    }
    for i in 0..zip.len() {
        let mut entry = zip
            .by_index(i)
            .map_err(|e| ArchiveError::Corrupt(e.to_string()))?;
        let name = entry.name().to_string();
        let rel = safe_path(&name)?;
        if entry.is_dir() {
            if !rel.as_os_str().is_empty() {
                w.dir(&rel)?;
            }
        } else if entry.is_symlink() {
            let mut target = String::new();
            (&mut entry)
                .take(4096)
                .read_to_string(&mut target)
                .map_err(|e| ArchiveError::Corrupt(e.to_string()))?;
            w.symlink(&rel, &target)?;
        } else {
            w.file(&rel, &mut entry)?;
        }
    }
    Ok(())
}

fn walk(
    archive: &Path,
    format: ArchiveFormat,
    dest: Option<&Path>,
    limits: Limits,
    cancel: &AtomicBool,
) -> Result<Stats, ArchiveError> {
    let mut w = Writer {
        dest,
        links: Default::default(),
        files: Default::default(),
        limits,
        stats: Stats::default(),
        cancel,
    };
    match format {
        ArchiveFormat::Zip => walk_zip(archive, &mut w)?,
        _ => walk_tar(archive, format, &mut w)?,
    }
    Ok(w.stats)
}

/// Reads the whole archive without writing anything, applying every check and limit.
pub fn inspect(
    archive: &Path,
    format: ArchiveFormat,
    limits: Limits,
) -> Result<Stats, ArchiveError> {
    walk(archive, format, None, limits, &AtomicBool::new(false))
}

/// Unpacks into `dest` (which must exist and be empty). After unpacking, every symbolic link is
/// resolved once more and must land inside `dest` (a chain of links that are each inside the
/// tree can still point out of it).
pub fn extract(
    archive: &Path,
    format: ArchiveFormat,
    dest: &Path,
    limits: Limits,
    cancel: &AtomicBool,
) -> Result<Stats, ArchiveError> {
    let stats = walk(archive, format, Some(dest), limits, cancel)?;
    let root = dest
        .canonicalize()
        .map_err(|e| ArchiveError::Corrupt(e.to_string()))?;
    check_links_inside(&root, &root)?;
    Ok(stats)
}

fn check_links_inside(root: &Path, dir: &Path) -> Result<(), ArchiveError> {
    let entries = std::fs::read_dir(dir).map_err(|e| ArchiveError::Corrupt(e.to_string()))?;
    for entry in entries {
        let entry = entry.map_err(|e| ArchiveError::Corrupt(e.to_string()))?;
        let kind = entry
            .file_type()
            .map_err(|e| ArchiveError::Corrupt(e.to_string()))?;
        let path = entry.path();
        if kind.is_symlink() {
            if let Ok(resolved) = path.canonicalize() {
                if !resolved.starts_with(root) {
                    let rel = path.strip_prefix(root).unwrap_or(&path);
                    // Remove it so nothing downstream can follow it, then refuse the archive.
                    let _ = std::fs::remove_file(&path);
                    return Err(refused(format!(
                        "symbolic link {} resolves outside the archive",
                        rel.display()
                    )));
                }
            }
        } else if kind.is_dir() {
            check_links_inside(root, &path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_bytes: 1024 * 1024,
        max_entries: 100,
    };

    /// Writes a tar with raw header names (the tar crate's builder refuses `..` itself).
    fn raw_tar(entries: &[(&str, tar::EntryType, &str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, kind, link, data) in entries {
            let mut header = tar::Header::new_gnu();
            {
                let bytes = header.as_old_mut();
                bytes.name[..name.len()].copy_from_slice(name.as_bytes());
                bytes.linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
            header.set_entry_type(*kind);
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            out.extend_from_slice(header.as_bytes());
            out.extend_from_slice(data);
            let pad = (512 - data.len() % 512) % 512;
            out.extend(std::iter::repeat_n(0u8, pad));
        }
        out.extend(std::iter::repeat_n(0u8, 1024));
        out
    }

    fn run(bytes: &[u8]) -> (tempfile::TempDir, Result<Stats, ArchiveError>) {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("a.tar");
        std::fs::write(&archive, bytes).unwrap();
        let dest = dir.path().join("out");
        std::fs::create_dir(&dest).unwrap();
        let format = sniff(bytes).expect("recognised");
        let inspected = inspect(&archive, format, LIMITS);
        let result = extract(&archive, format, &dest, LIMITS, &AtomicBool::new(false));
        assert_eq!(
            inspected.is_ok(),
            result.is_ok(),
            "inspection agrees with extraction"
        );
        (dir, result)
    }

    #[test]
    fn plain_archives_unpack() {
        use tar::EntryType as T;
        let bytes = raw_tar(&[
            ("src/", T::Directory, "", b""),
            ("src/main.py", T::Regular, "", b"print(1)\n"),
            ("src/link.py", T::Symlink, "main.py", b""),
            ("src/hard.py", T::Link, "src/main.py", b""),
        ]);
        let (dir, result) = run(&bytes);
        let stats = result.unwrap();
        assert_eq!((stats.files, stats.bytes, stats.entries), (1, 9, 4));
        let out = dir.path().join("out/src");
        assert_eq!(
            std::fs::read_to_string(out.join("link.py")).unwrap(),
            "print(1)\n"
        );
        assert_eq!(
            std::fs::read_to_string(out.join("hard.py")).unwrap(),
            "print(1)\n"
        );
    }

    #[test]
    fn hostile_tar_entries_are_refused_and_nothing_lands_outside() {
        use tar::EntryType as T;
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                "traversal",
                raw_tar(&[("../evil.txt", T::Regular, "", b"x")]),
                "`..`",
            ),
            (
                "nested traversal",
                raw_tar(&[("a/../../evil.txt", T::Regular, "", b"x")]),
                "`..`",
            ),
            (
                "absolute",
                raw_tar(&[("/tmp/evil.txt", T::Regular, "", b"x")]),
                "absolute",
            ),
            (
                "symlink out",
                raw_tar(&[("link", T::Symlink, "../../etc", b"")]),
                "outside",
            ),
            (
                "absolute symlink",
                raw_tar(&[("link", T::Symlink, "/etc/passwd", b"")]),
                "outside",
            ),
            (
                "write through link",
                raw_tar(&[("d", T::Symlink, ".", b""), ("d/x", T::Regular, "", b"x")]),
                "through the link",
            ),
            (
                "link chain",
                raw_tar(&[("y", T::Symlink, ".", b""), ("x", T::Symlink, "y/..", b"")]),
                "points through the link",
            ),
            (
                "hard link out",
                raw_tar(&[("h", T::Link, "../../etc/passwd", b"")]),
                "outside",
            ),
            (
                "duplicate",
                raw_tar(&[("a", T::Regular, "", b"1"), ("a", T::Regular, "", b"2")]),
                "twice",
            ),
        ];
        for (name, bytes, needle) in cases {
            let (dir, result) = run(&bytes);
            let err = result.expect_err(name).to_string();
            assert!(err.contains(needle), "{name}: {err}");
            assert!(!dir.path().join("evil.txt").exists(), "{name}");
            let outside: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            assert_eq!(outside.len(), 2, "{name}: only a.tar and out/: {outside:?}");
        }
    }

    #[test]
    fn bombs_stop_at_the_limits() {
        // 4 MiB of zeros compress to a few KiB.
        let big = vec![0u8; 4 * 1024 * 1024];
        let tar_bytes = raw_tar(&[("zeros.bin", tar::EntryType::Regular, "", &big)]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&tar_bytes).unwrap();
        let gz = gz.finish().unwrap();
        assert!(gz.len() < 64 * 1024);
        let (dir, result) = run(&gz);
        assert!(result.unwrap_err().to_string().contains("more than"));
        let written = std::fs::metadata(dir.path().join("out/zeros.bin"))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(
            written <= LIMITS.max_bytes + 1,
            "stopped at the limit, wrote {written}"
        );

        let many: Vec<(String, tar::EntryType, &str, &[u8])> = (0..150)
            .map(|i| (format!("f{i}"), tar::EntryType::Regular, "", &b"x"[..]))
            .collect();
        let refs: Vec<_> = many
            .iter()
            .map(|(n, k, l, d)| (n.as_str(), *k, *l, *d))
            .collect();
        let (_dir, result) = run(&raw_tar(&refs));
        assert!(result.unwrap_err().to_string().contains("entries"));
    }

    #[test]
    fn zip_archives_and_their_hostile_forms() {
        let make = |entries: &[(&str, &[u8])]| -> Vec<u8> {
            let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
            for (name, data) in entries {
                zip.start_file(*name, zip::write::SimpleFileOptions::default())
                    .unwrap();
                zip.write_all(data).unwrap();
            }
            zip.finish().unwrap().into_inner()
        };
        let (dir, ok) = run(&make(&[("a/b.txt", b"hello")]));
        assert_eq!(ok.unwrap().files, 1);
        assert!(dir.path().join("out/a/b.txt").exists());
        let (dir, bad) = run(&make(&[("../evil.txt", b"x")]));
        assert!(bad.unwrap_err().to_string().contains("`..`"));
        assert!(!dir.path().join("evil.txt").exists());
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        zip.add_symlink("l", "../../etc", zip::write::SimpleFileOptions::default())
            .unwrap();
        let (_dir, bad) = run(&zip.finish().unwrap().into_inner());
        assert!(bad.unwrap_err().to_string().contains("outside"));
        // Two entries with one name: written as `a1`/`a2`, then renamed to `a1` in place (the
        // local headers and the central directory), as a hostile archive would carry them.
        let mut bytes = make(&[("a1", b"first"), ("a2", b"second")]);
        let renamed: Vec<usize> = bytes
            .windows(2)
            .enumerate()
            .filter(|(_, w)| w == b"a2")
            .map(|(i, _)| i)
            .collect();
        assert_eq!(renamed.len(), 2, "one local header and one directory entry");
        for i in renamed {
            bytes[i + 1] = b'1';
        }
        let (dir, dup) = run(&bytes);
        assert!(
            dup.unwrap_err().to_string().contains("twice"),
            "a duplicate zip entry is refused like a tar one"
        );
        assert!(!dir.path().join("out/a1").exists());
    }

    #[test]
    fn formats_are_recognised_by_content() {
        assert_eq!(sniff(b"\x1f\x8b\x08rest"), Some(ArchiveFormat::TarGz));
        assert_eq!(sniff(b"BZh91AY"), Some(ArchiveFormat::TarBz2));
        assert_eq!(sniff(b"PK\x03\x04"), Some(ArchiveFormat::Zip));
        let tar = raw_tar(&[("a", tar::EntryType::Regular, "", b"x")]);
        assert_eq!(sniff(&tar), Some(ArchiveFormat::Tar));
        assert_eq!(sniff(b"#!/bin/sh\necho not an archive"), None);
        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        bz.write_all(&tar).unwrap();
        let (dir, ok) = run(&bz.finish().unwrap());
        assert_eq!(ok.unwrap().files, 1);
        assert!(dir.path().join("out/a").exists());
    }
}
