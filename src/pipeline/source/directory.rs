//! Sources on the server's own disk: `directory` scans (only inside the configured source roots,
//! checked after resolving symbolic links) and the content hash that identifies what a directory
//! scan saw.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::anyhow;
use sha2::{Digest, Sha256};

/// Resolves `requested` (absolute, or relative to the first root) and checks that the real path
/// is a directory inside one of `roots` (themselves already canonical).
pub fn resolve_directory(requested: &str, roots: &[PathBuf]) -> Result<PathBuf, String> {
    if roots.is_empty() {
        return Err("directory scans are not enabled on this server: no source roots are configured (CERTUS_ASSURANCE_SOURCE_ROOTS)".into());
    }
    if requested.trim().is_empty() || requested.contains('\0') {
        return Err("directory_path must be a path inside one of the server's source roots".into());
    }
    let candidate = Path::new(requested);
    let candidate = if candidate.is_absolute() {
        candidate.to_path_buf()
    } else {
        roots[0].join(candidate)
    };
    // One answer for a path that does not exist and one outside the roots: telling them apart
    // would let a caller probe which paths exist anywhere on the server.
    let refused = || {
        "directory_path must name an existing directory inside the server's source roots \
         (CERTUS_ASSURANCE_SOURCE_ROOTS); symbolic links are resolved before the check"
            .to_string()
    };
    let real = candidate.canonicalize().map_err(|_| refused())?;
    if !roots.iter().any(|root| real.starts_with(root)) {
        return Err(refused());
    }
    if !real.is_dir() {
        return Err("directory_path is not a directory".into());
    }
    Ok(real)
}

/// What a directory held when it was hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryDigest {
    /// `sha256:<hex>` over the sorted list of (kind, path, content digest).
    pub id: String,
    pub files: u64,
    pub bytes: u64,
}

/// Hashes a tree: every regular file's content and every symbolic link's target, keyed by
/// relative path (sorted), so the same content gives the same id wherever it lives. `.git`
/// directories are left out (their packing changes without the content changing).
pub fn hash_directory(root: &Path, cancel: &AtomicBool) -> anyhow::Result<DirectoryDigest> {
    let mut entries: Vec<(String, String)> = Vec::new();
    let mut files = 0;
    let mut bytes = 0;
    let mut stack = vec![root.to_path_buf()];
    let mut buf = vec![0u8; 256 * 1024];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            if cancel.load(Ordering::Relaxed) {
                return Err(anyhow!("cancelled"));
            }
            let entry = entry?;
            let kind = entry.file_type()?;
            let path = entry.path();
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .replace('\\', "/");
            if kind.is_dir() {
                if entry.file_name() != ".git" {
                    stack.push(path);
                }
            } else if kind.is_symlink() {
                let target = std::fs::read_link(&path)?;
                entries.push((
                    format!("link {rel}"),
                    hex::encode(Sha256::digest(target.to_string_lossy().as_bytes())),
                ));
            } else if kind.is_file() {
                let mut file = std::fs::File::open(&path)?;
                let mut h = Sha256::new();
                loop {
                    let n = file.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                    bytes += n as u64;
                }
                files += 1;
                entries.push((format!("file {rel}"), hex::encode(h.finalize())));
            }
        }
    }
    entries.sort();
    let mut outer = Sha256::new();
    for (name, digest) in &entries {
        outer.update(name.as_bytes());
        outer.update([0]);
        outer.update(digest.as_bytes());
        outer.update(b"\n");
    }
    Ok(DirectoryDigest {
        id: format!("sha256:{}", hex::encode(outer.finalize())),
        files,
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_must_be_inside_a_root_after_resolving_links() {
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("root");
        let outside = base.path().join("outside");
        std::fs::create_dir_all(root.join("proj")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("escape")).unwrap();
        let roots = vec![root.canonicalize().unwrap()];
        let ok = resolve_directory(root.join("proj").to_str().unwrap(), &roots).unwrap();
        assert!(ok.ends_with("proj"));
        assert_eq!(resolve_directory("proj", &roots).unwrap(), ok);
        for bad in [
            root.join("escape").to_string_lossy().into_owned(),
            root.join("proj/../../outside")
                .to_string_lossy()
                .into_owned(),
            "/etc".to_string(),
            root.join("missing").to_string_lossy().into_owned(),
        ] {
            assert!(resolve_directory(&bad, &roots).is_err(), "{bad}");
        }
        assert!(resolve_directory("proj", &[])
            .unwrap_err()
            .contains("SOURCE_ROOTS"));
    }

    #[test]
    fn a_root_that_is_a_link_confines_to_its_target() {
        let base = tempfile::tempdir().unwrap();
        let real = base.path().join("real");
        let sibling = base.path().join("sibling");
        std::fs::create_dir_all(real.join("proj/sub")).unwrap();
        std::fs::create_dir_all(&sibling).unwrap();
        let link = base.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        // The configuration canonicalizes roots, as here.
        let roots = vec![link.canonicalize().unwrap()];
        let expected = real.join("proj").canonicalize().unwrap();
        for ok in [
            link.join("proj").to_string_lossy().into_owned(),
            real.join("proj").to_string_lossy().into_owned(),
            link.join("proj/sub/..").to_string_lossy().into_owned(),
            "proj".to_string(),
            "./proj/".to_string(),
        ] {
            assert_eq!(resolve_directory(&ok, &roots).unwrap(), expected, "{ok}");
        }
        for bad in [
            link.join("../sibling").to_string_lossy().into_owned(),
            link.join("proj/../../sibling")
                .to_string_lossy()
                .into_owned(),
            "../sibling".to_string(),
            "..".to_string(),
            "proj/\0".to_string(),
            link.join("proj/sub/a.txt").to_string_lossy().into_owned(),
        ] {
            assert!(resolve_directory(&bad, &roots).is_err(), "{bad:?}");
        }
        // The root itself may be scanned; its parent may not.
        assert!(resolve_directory(link.to_str().unwrap(), &roots).is_ok());
        assert!(resolve_directory(base.path().to_str().unwrap(), &roots).is_err());
    }

    #[test]
    fn content_hash_is_stable_and_content_sensitive() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        for d in [a.path(), b.path()] {
            std::fs::create_dir_all(d.join("src")).unwrap();
            std::fs::write(d.join("src/x.py"), "print(1)").unwrap();
            std::fs::write(d.join("README"), "hi").unwrap();
        }
        std::fs::create_dir_all(b.path().join(".git")).unwrap();
        std::fs::write(b.path().join(".git/HEAD"), "ref").unwrap();
        let cancel = AtomicBool::new(false);
        let ha = hash_directory(a.path(), &cancel).unwrap();
        let hb = hash_directory(b.path(), &cancel).unwrap();
        assert_eq!(ha, hb);
        assert_eq!((ha.files, ha.bytes), (2, 10));
        std::fs::write(b.path().join("src/x.py"), "print(2)").unwrap();
        assert_ne!(hash_directory(b.path(), &cancel).unwrap().id, ha.id);
    }
}
